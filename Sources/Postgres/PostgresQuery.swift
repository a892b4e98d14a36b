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

    /// Throws the error recorded while the query was built, if any.
    func validated() throws -> PostgresQuery {
        if let buildError { throw buildError }
        return self
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

        private mutating func record(_ error: any Error) {
            if buildError == nil {
                buildError = error as? PostgresError ?? PostgresError(.encoding, "\(error)")
            }
        }
    }
}
