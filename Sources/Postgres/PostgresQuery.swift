/// A statement with its bind parameters, written with string interpolation.
///
/// Interpolated values become parameters (`$1`, `$2`, …), never text. Names and DDL literals take labels
/// that say how they are quoted, and raw text must say it is unescaped:
///
/// ```swift
/// let query: PostgresQuery = """
///     SELECT profile_id FROM \(identifier: schema).\(identifier: table) WHERE email = \(email) LIMIT \(limit)
///     """
/// // SELECT profile_id FROM "cdp"."profiles" WHERE email = $1 LIMIT $2
/// ```
public struct PostgresQuery: Sendable, Hashable, ExpressibleByStringInterpolation, CustomStringConvertible {
    /// The SQL text, with `$n` placeholders.
    public var sql: String
    /// The values for the placeholders, in order.
    public var binds: [PostgresBind]
    /// The first problem met while building the query (a NUL byte, an over-long name); thrown when it runs.
    var buildError: PostgresError?

    /// SQL text as it is, with binds for its `$n` placeholders. The caller vouches that `sql` holds no
    /// user-supplied text.
    public init(unsafeSQL sql: String, binds: [PostgresBind] = []) {
        self.sql = sql
        self.binds = binds
    }

    public init(stringLiteral value: String) {
        self.init(unsafeSQL: value)
    }

    public init(stringInterpolation: StringInterpolation) {
        sql = stringInterpolation.sql
        binds = stringInterpolation.binds
        buildError = stringInterpolation.buildError
    }

    public var description: String { sql }

    public static func == (lhs: PostgresQuery, rhs: PostgresQuery) -> Bool {
        lhs.sql == rhs.sql && lhs.binds == rhs.binds
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(sql) }

    /// The fragments one after another, `separator` between them, their placeholders renumbered (see
    /// ``StringInterpolation/appendInterpolation(_:)-(PostgresQuery)``).
    public static func joined(_ fragments: some Sequence<PostgresQuery>, separator: String = ", ") -> PostgresQuery {
        var result = PostgresQuery(unsafeSQL: "")
        var first = true
        for fragment in fragments {
            if !first { result.sql += separator }
            first = false
            result.append(fragment)
        }
        return result
    }

    /// The query with its text transformed by `transform` and the same binds: for layout (indentation, line breaks).
    /// `transform` must keep every `$n` placeholder as it is.
    public func withText(_ transform: (String) -> String) -> PostgresQuery {
        var result = self
        result.sql = transform(sql)
        return result
    }

    /// Appends `fragment`, renumbering its placeholders after this query's.
    public mutating func append(_ fragment: PostgresQuery) {
        if buildError == nil, let error = fragment.buildError { buildError = error }
        sql += Self.renumbered(fragment.sql, by: binds.count)
        binds += fragment.binds
    }

    /// The query with every bind written into the text as a quoted literal with its type (`'42'::int8`), for
    /// statements that cannot take parameters (DDL such as `CREATE VIEW`). NULL becomes `NULL::type`; `bytea` a hex
    /// literal. Literals go through ``SQLQuoting/literal(_:)``.
    public func inlined() throws -> PostgresQuery {
        if let buildError { throw buildError }
        var literals: [String] = []
        for bind in binds {
            let cast = bind.type == .unspecified ? "" : "::\(bind.type.description)"
            guard let bytes = bind.bytes else {
                literals.append("NULL\(cast)")
                continue
            }
            if bind.isBinary {
                let hex = bytes.map { byte in
                    let digits = String(byte, radix: 16)
                    return digits.count == 1 ? "0" + digits : digits
                }.joined()
                literals.append("'\\x\(hex)'::bytea")
            } else {
                literals.append(try SQLQuoting.literal(String(decoding: bytes, as: UTF8.self)) + cast)
            }
        }
        return PostgresQuery(unsafeSQL: Self.replacingPlaceholders(in: sql) { literals[$0 - 1] })
    }

    /// `sql` with each `$n` placeholder moved up by `offset`.
    static func renumbered(_ sql: String, by offset: Int) -> String {
        offset == 0 ? sql : replacingPlaceholders(in: sql) { "$\($0 + offset)" }
    }

    /// `sql` with each `$n` placeholder replaced by `replacement(n)`. Placeholders are found as PostgreSQL's lexer
    /// finds them: not inside string constants (`'…'`, `E'…'`, dollar-quoted), quoted identifiers or comments, and not
    /// a `$` that continues an identifier (`a$1`).
    static func replacingPlaceholders(in sql: String, _ replacement: (Int) -> String) -> String {
        let text = Array(sql.utf8)
        var output: [UInt8] = []
        output.reserveCapacity(text.count + 16)
        var index = 0
        func isIdentifierByte(_ byte: UInt8) -> Bool {
            (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x5F
                || byte == 0x24 || byte >= 0x80
        }
        func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }
        /// Whether the word before `position` is a number (`2$3` is 2 then a placeholder; `a2$3` is one name).
        func followsNumber(_ position: Int) -> Bool {
            var start = position
            while start > 0 && isIdentifierByte(text[start - 1]) { start -= 1 }
            return start < position && isDigit(text[start])
        }
        /// Copies through the closing `quote` (doubled quotes stay inside; with `backslashes`, `\x` too).
        func copyQuoted(_ quote: UInt8, backslashes: Bool) {
            output.append(text[index])
            index += 1
            while index < text.count {
                let byte = text[index]
                output.append(byte)
                index += 1
                if backslashes && byte == 0x5C && index < text.count {
                    output.append(text[index])
                    index += 1
                } else if byte == quote {
                    if index < text.count && text[index] == quote {
                        output.append(text[index])
                        index += 1
                    } else {
                        return
                    }
                }
            }
        }
        while index < text.count {
            let byte = text[index]
            let previous: UInt8? = index > 0 ? text[index - 1] : nil
            switch byte {
            case 0x27:  // '
                // E'…' (backslash escapes), when the E starts a token rather than ends a name.
                let escaped =
                    (previous == 0x45 || previous == 0x65) && (index < 2 || !isIdentifierByte(text[index - 2]))
                copyQuoted(0x27, backslashes: escaped)
            case 0x22:  // "
                copyQuoted(0x22, backslashes: false)
            case 0x2D where index + 1 < text.count && text[index + 1] == 0x2D:  // -- comment
                while index < text.count && text[index] != 0x0A {
                    output.append(text[index])
                    index += 1
                }
            case 0x2F where index + 1 < text.count && text[index + 1] == 0x2A:  // /* comment */, nested
                var depth = 0
                while index < text.count {
                    if text[index] == 0x2F && index + 1 < text.count && text[index + 1] == 0x2A {
                        depth += 1
                        output += [0x2F, 0x2A]
                        index += 2
                    } else if text[index] == 0x2A && index + 1 < text.count && text[index + 1] == 0x2F {
                        depth -= 1
                        output += [0x2A, 0x2F]
                        index += 2
                        if depth == 0 { break }
                    } else {
                        output.append(text[index])
                        index += 1
                    }
                }
            case 0x24 where previous.map(isIdentifierByte) != true || followsNumber(index):  // $: a placeholder or a dollar quote
                var end = index + 1
                if end < text.count && isDigit(text[end]) {
                    while end < text.count && isDigit(text[end]) { end += 1 }
                    let number = Int(String(decoding: text[(index + 1)..<end], as: UTF8.self)) ?? 0
                    output += Array(replacement(number).utf8)
                    index = end
                    continue
                }
                while end < text.count && isIdentifierByte(text[end]) && text[end] != 0x24 { end += 1 }
                if end < text.count && text[end] == 0x24 {
                    // $tag$ … $tag$: copied whole.
                    let tag = Array(text[index...end])
                    output += tag
                    index = end + 1
                    while index < text.count {
                        if text[index] == 0x24 && index + tag.count <= text.count
                            && Array(text[index..<(index + tag.count)]) == tag
                        {
                            output += tag
                            index += tag.count
                            break
                        }
                        output.append(text[index])
                        index += 1
                    }
                } else {
                    output.append(byte)
                    index += 1
                }
            default:
                output.append(byte)
                index += 1
            }
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Throws the error recorded while the query was built, if any. Debug builds also refuse two misuses that
    /// PostgreSQL would only call a syntax error: a bind parameter where a name belongs (`$1.table`: a `String`
    /// interpolated without `identifier:` or `unescaped:`), and parameters on a COPY statement (which takes none:
    /// use ``inlined()``).
    func validated() throws -> PostgresQuery {
        if let buildError { throw buildError }
        #if DEBUG
            if !binds.isEmpty { try checkPlaceholders() }
        #endif
        return self
    }

    /// See ``validated()``.
    func checkPlaceholders() throws {
        let marked = Array(Self.replacingPlaceholders(in: sql) { "\u{1}\($0)\u{2}" }.utf8)
        if let end = marked.indices.dropLast().first(where: { marked[$0] == 0x02 && marked[$0 + 1] == UInt8(ascii: ".") }) {
            let start = marked[..<end].lastIndex(of: 0x01).map { $0 + 1 } ?? end
            let number = String(decoding: marked[start..<end], as: UTF8.self)
            throw PostgresError(
                .encoding,
                "bind parameter $\(number) stands where a name belongs (before '.'): interpolate names with \\(identifier:) or program text with \\(unescaped:)"
            )
        }
        let start = sql.drop { $0 == " " || $0 == "\n" || $0 == "\t" }.prefix(5).uppercased()
        if start.hasPrefix("COPY ") || start == "COPY" {
            throw PostgresError(.encoding, "COPY takes no bind parameters: build the statement with inlined()")
        }
    }

    /// Calls `body` with the parameter arrays libpq's `PQexecParams` and `PQsendQueryParams` take; the pointers
    /// are valid only during the call. Text values are NUL-terminated; `bytea` goes in binary format.
    func withParameters<R>(
        _ body: (
            Int32, UnsafePointer<UInt32>?, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?,
            UnsafePointer<Int32>?
        ) -> R
    ) -> R {
        if binds.isEmpty { return body(0, nil, nil, nil, nil) }
        var storage: [UInt8] = []
        var offsets: [Int?] = []
        storage.reserveCapacity(binds.reduce(0) { $0 + ($1.bytes?.count ?? 0) + 1 })
        for bind in binds {
            if let bytes = bind.bytes {
                offsets.append(storage.count)
                storage.append(contentsOf: bytes)
                storage.append(0)
            } else {
                offsets.append(nil)
            }
        }
        let types = binds.map { $0.type.oid }
        let lengths = binds.map { Int32($0.bytes?.count ?? 0) }
        let formats = binds.map { Int32($0.isBinary ? 1 : 0) }
        return storage.withUnsafeBufferPointer { buffer in
            let values: [UnsafePointer<CChar>?] = offsets.map { offset in
                offset.map { UnsafeRawPointer(buffer.baseAddress! + $0).assumingMemoryBound(to: CChar.self) }
            }
            return body(Int32(binds.count), types, values, lengths, formats)
        }
    }

    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var binds: [PostgresBind] = []
        var buildError: PostgresError?

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
        }

        public mutating func appendLiteral(_ literal: String) { sql += literal }

        /// A bind parameter: appends `$n`.
        public mutating func appendInterpolation(_ value: some PostgresEncodable) {
            do {
                binds.append(try value.postgresBind())
            } catch {
                record(error)
                binds.append(.null(.unspecified))
            }
            sql += "$\(binds.count)"
        }

        /// An optional bind parameter: appends `$n`, NULL for nil (spelled out so that interpolating an optional is
        /// plainly a parameter, not text).
        public mutating func appendInterpolation<Value: PostgresEncodable>(_ value: Value?) {
            do {
                binds.append(try value.postgresBind())
            } catch {
                record(error)
                binds.append(.null(.unspecified))
            }
            sql += "$\(binds.count)"
        }

        /// A quoted identifier, through ``SQLQuoting/identifier(_:)``.
        public mutating func appendInterpolation(identifier: String) {
            do { sql += try SQLQuoting.identifier(identifier) } catch { record(error) }
        }

        /// A quoted literal, through ``SQLQuoting/literal(_:)``; for DDL, where parameters are impossible.
        public mutating func appendInterpolation(literal: String) {
            do { sql += try SQLQuoting.literal(literal) } catch { record(error) }
        }

        /// Raw SQL text. Only for text the program itself wrote, never for user input.
        public mutating func appendInterpolation(unescaped: String) { sql += unescaped }

        /// Another query, embedded: its text goes in as it is, its binds follow this query's, and its `$n`
        /// placeholders are renumbered to match. Fragments compose without anyone counting placeholders:
        ///
        /// ```swift
        /// let recent: PostgresQuery = "timestamp > \(since)"
        /// let query: PostgresQuery = "SELECT count(*) FROM cdp.events WHERE event = \(name) AND \(recent)"
        /// // SELECT count(*) FROM cdp.events WHERE event = $1 AND timestamp > $2
        /// ```
        public mutating func appendInterpolation(_ fragment: PostgresQuery) {
            if let error = fragment.buildError { record(error) }
            sql += PostgresQuery.renumbered(fragment.sql, by: binds.count)
            binds += fragment.binds
        }

        private mutating func record(_ error: any Error) {
            if buildError == nil {
                buildError = error as? PostgresError ?? PostgresError(.encoding, "\(error)")
            }
        }
    }
}
