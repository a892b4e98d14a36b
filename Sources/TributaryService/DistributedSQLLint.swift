/// Finds, in SQL text, the constructs Citus refuses (or runs wrongly) on distributed tables, so a test can run the
/// whole product on the stand-in (`DistributionMode.standin`), collect every statement it sent (with
/// `pg_stat_statements`, which also sees the statements inside SQL and PL/pgSQL functions) and fail on any of them.
///
/// It reads tokens, not a parse tree: it knows which tables a statement names, and looks for the refused shapes
/// around them. What it checks, each with the rule it stands for:
/// - `recursive CTE`: `WITH RECURSIVE` in a statement that reads a distributed table (Citus plans recursive CTEs
///   only over local and reference tables).
/// - `row lock`: `FOR UPDATE` / `FOR SHARE` / `FOR NO KEY UPDATE` / `FOR KEY SHARE` in a statement that reads a
///   distributed table (Citus takes row locks only in single-shard queries; this product must not depend on that).
/// - `non-immutable in DO UPDATE`: a function that is not IMMUTABLE (`now()`, `clock_timestamp()`, a `cdp` function
///   declared STABLE or VOLATILE, ...) in the `ON CONFLICT DO UPDATE` of an insert into any table Citus manages
///   ("functions used in the DO UPDATE SET clause of INSERTs on distributed tables must be marked IMMUTABLE"; reference
///   and local tables in Citus's metadata are held to it too, so the product keeps to it everywhere).
/// - `volatile in modification`: a VOLATILE function (`random()`, `clock_timestamp()`, `gen_random_uuid()`,
///   `nextval()`) in an UPDATE or DELETE of a distributed table (shards would each compute their own value).
/// - `distribution column updated`: `UPDATE t SET <distribution column> =` ("modifying the partition value of rows
///   is not allowed").
/// - `subquery in VALUES`: `INSERT INTO t ... VALUES (..., (SELECT ...))` into a distributed table ("subqueries are
///   not supported within INSERT queries").
/// - `non-co-located join`: `UPDATE t ... FROM` / `DELETE FROM t ... USING` a distributed table of another
///   co-location group ("complex joins are only supported when all distributed tables are co-located").
///
/// What it cannot see: whether a join inside one co-location group is on the distribution columns, joins in SELECTs
/// (Citus repartitions or pulls them), how many shards a statement touches, or its cost. The stand-in proves the key rule; this
/// lint the statement shapes; neither proves performance on a cluster.
public struct DistributedSQLLint: Sendable {
    /// One refused construct.
    public struct Finding: Sendable, Hashable, CustomStringConvertible {
        /// The rule's short name (`recursive CTE`, `row lock`, ...).
        public let rule: String
        /// The distributed table it concerns, as `cdp.name`.
        public let table: String
        public let detail: String
        public var description: String { "\(rule) on \(table): \(detail)" }
    }

    /// Distributed tables (`cdp.name`) and their distribution columns.
    public let distributed: [String: String]
    /// Functions, lower-cased and unqualified for `pg_catalog` (`now`) or qualified (`cdp.jsonb_float8`), that are not
    /// IMMUTABLE, mapped to whether they are VOLATILE.
    public let nonImmutable: [String: Bool]

    /// The built-in functions this product uses that are not IMMUTABLE (true: VOLATILE).
    public static let builtinNonImmutable: [String: Bool] = [
        "now": false, "statement_timestamp": false, "transaction_timestamp": false, "current_setting": false,
        "to_char": false, "age": false, "timezone": false, "date_trunc": false,
        "clock_timestamp": true, "timeofday": true, "random": true, "nextval": true, "setval": true,
        "currval": true, "gen_random_uuid": true, "txid_current": true, "pg_current_xact_id": true,
    ]

    /// SQL value functions written without parentheses; all STABLE.
    static let stableKeywords: Set<String> = [
        "current_timestamp", "current_date", "current_time", "localtimestamp", "localtime",
    ]

    /// Every table Citus manages (distributed, reference and coordinator-local tables alike), as `cdp.name`: the
    /// `DO UPDATE` rule holds for all of them.
    public let managed: Set<String>
    /// The co-location group of each distributed table (`cdp.name` → group); empty: the join rule is not checked.
    public let colocation: [String: String]

    public init(
        distributed: [String: String], managed: Set<String> = [], colocation: [String: String] = [:],
        nonImmutable: [String: Bool] = builtinNonImmutable
    ) {
        self.distributed = distributed
        self.managed = managed.union(distributed.keys)
        self.colocation = colocation
        self.nonImmutable = nonImmutable
    }

    /// The lint for `DistributionPlan`.
    public static func forPlan(nonImmutable: [String: Bool] = builtinNonImmutable) -> DistributedSQLLint {
        var colocation: [String: String] = [:]
        for placement in DistributionPlan.placements {
            if case .distributed(_, let group) = placement.kind { colocation["cdp.\(placement.table)"] = group }
        }
        return DistributedSQLLint(
            distributed: DistributionPlan.distributedColumns,
            managed: Set(DistributionPlan.placements.map { "cdp.\($0.table)" }), colocation: colocation,
            nonImmutable: nonImmutable)
    }

    /// The refused constructs in one statement (or several separated by `;`).
    public func check(_ sql: String) -> [Finding] {
        var findings: [Finding] = []
        for statement in SQLTokens(sql).statements() {
            findings += check(statement)
        }
        return findings
    }

    /// The refused constructs in a script such as a file of `sql/`, including the bodies of the functions it
    /// creates (dollar-quoted), each finding with the function it is in. For code that a run may not reach.
    public func checkScript(_ sql: String) -> [(function: String?, finding: Finding)] {
        var findings: [(function: String?, finding: Finding)] = []
        for statement in SQLTokens(sql).statements() {
            findings += check(statement).map { (nil, $0) }
            guard let create = statement.firstIndex(where: { $0.word == "function" || $0.word == "procedure" }),
                create + 3 < statement.count, let schema = statement[create + 1].identifier,
                statement[create + 2].text == ".", let name = statement[create + 3].identifier
            else { continue }
            for token in statement where token.kind == .dollarQuoted {
                findings += check(token.text).map { ("\(schema).\(name)", $0) }
            }
        }
        return findings
    }

    private func check(_ tokens: [SQLTokens.Token]) -> [Finding] {
        let named = tablesNamed(in: tokens)
        let distributedNamed = named.filter { distributed[$0] != nil }
        guard named.contains(where: managed.contains) else { return [] }
        let first = distributedNamed.first ?? ""
        var findings: [Finding] = []
        for (index, token) in tokens.enumerated() where !distributedNamed.isEmpty {
            let next = index + 1 < tokens.count ? tokens[index + 1].word : nil
            if token.word == "with", next == "recursive" {
                findings.append(
                    Finding(rule: "recursive CTE", first, "WITH RECURSIVE reads \(distributedNamed.joined(separator: ", "))"))
            }
            if token.word == "for", let next, ["update", "share", "no", "key"].contains(next) {
                // `FOR UPDATE` of a cursor or a trigger's `FOR EACH` never follows these words.
                findings.append(
                    Finding(
                        rule: "row lock", first,
                        "FOR \(next.uppercased()) in a statement reading \(distributedNamed.joined(separator: ", "))"))
            }
        }
        // The targets of INSERT / UPDATE / DELETE, at any depth (a data-modifying CTE is one too).
        for (index, token) in tokens.enumerated() {
            switch token.word {
            case "insert":
                guard index + 3 < tokens.count, tokens[index + 1].word == "into" else { continue }
                guard let (target, _) = tableName(at: index + 2, in: tokens), managed.contains(target) else { continue }
                findings += checkInsert(tokens, from: index, target: target)
            case "update":
                // `DO UPDATE` of ON CONFLICT and `FOR UPDATE` are not statements.
                if index > 0, ["do", "for", "no", "key"].contains(tokens[index - 1].word ?? "") { continue }
                guard let (target, end) = tableName(at: index + 1, in: tokens), let column = distributed[target] else {
                    continue
                }
                findings += checkUpdate(tokens, from: end, target: target, column: column)
            case "delete":
                guard index + 2 < tokens.count, tokens[index + 1].word == "from",
                    let (target, end) = tableName(at: index + 2, in: tokens), distributed[target] != nil
                else { continue }
                let partEnd = statementPartEnd(tokens, from: end, depth: token.depth)
                findings += checkModificationCalls(tokens, start: end, end: partEnd, target: target, verb: "DELETE")
                findings += checkJoins(tokens, start: end, end: partEnd, clause: "using", target: target, verb: "DELETE")
            default:
                continue
            }
        }
        // Once each, in the order found.
        var unique: [Finding] = []
        for finding in findings where !unique.contains(finding) { unique.append(finding) }
        return unique
    }

    private func checkInsert(_ tokens: [SQLTokens.Token], from index: Int, target: String) -> [Finding] {
        var findings: [Finding] = []
        let depth = tokens[index].depth
        let end = statementPartEnd(tokens, from: index + 1, depth: depth)
        var position = index + 1
        while position < end {
            let token = tokens[position]
            if token.depth == depth, token.word == "values" {
                var inner = position + 1
                while inner < end, tokens[inner].depth > depth || tokens[inner].text == "(" || tokens[inner].text == "," {
                    if tokens[inner].word == "select" {
                        findings.append(
                            Finding(rule: "subquery in VALUES", target, "a SELECT inside the VALUES of an INSERT"))
                        break
                    }
                    inner += 1
                }
            }
            if token.depth == depth, token.word == "do", position + 2 < end, tokens[position + 1].word == "update",
                tokens[position + 2].word == "set"
            {
                var setEnd = position + 3
                while setEnd < end, !(tokens[setEnd].depth == depth && tokens[setEnd].word == "returning") {
                    setEnd += 1
                }
                for call in calls(in: tokens[(position + 3)..<setEnd]) {
                    findings.append(
                        Finding(
                            rule: "non-immutable in DO UPDATE", target,
                            "\(call) in ON CONFLICT DO UPDATE (Citus: functions there must be IMMUTABLE)"))
                }
            }
            position += 1
        }
        return findings
    }

    private func checkUpdate(
        _ tokens: [SQLTokens.Token], from start: Int, target: String, column: String
    ) -> [Finding] {
        var findings: [Finding] = []
        guard start < tokens.count else { return [] }
        let depth = tokens[start].depth
        var position = start
        // Skip an alias: UPDATE cdp.t AS x SET / UPDATE cdp.t x SET.
        while position < tokens.count, tokens[position].word != "set" { position += 1 }
        let end = statementPartEnd(tokens, from: position, depth: depth)
        var index = position + 1
        var expectColumn = true
        while index < end {
            let token = tokens[index]
            if token.depth == depth, ["from", "where", "returning"].contains(token.word ?? "") { break }
            if token.depth == depth, token.text == "," {
                expectColumn = true
            } else if expectColumn, token.depth == depth {
                if token.identifier == column {
                    findings.append(
                        Finding(
                            rule: "distribution column updated", target,
                            "SET \(column) = ... (Citus refuses to change a row's distribution column)"))
                }
                expectColumn = false
            }
            index += 1
        }
        findings += checkModificationCalls(tokens, start: position, end: end, target: target, verb: "UPDATE")
        findings += checkJoins(tokens, start: position, end: end, clause: "from", target: target, verb: "UPDATE")
        return findings
    }

    /// The join rule of UPDATE … FROM and DELETE … USING: the tables joined to a distributed target must be in its
    /// co-location group (Citus: "complex joins are only supported when all distributed tables are co-located and
    /// joined on their distribution columns"). Subqueries are not checked: Citus plans uncorrelated ones on their own.
    private func checkJoins(
        _ tokens: [SQLTokens.Token], start: Int, end: Int, clause: String, target: String, verb: String
    ) -> [Finding] {
        guard let group = colocation[target], start < end else { return [] }
        let depth = tokens[start].depth
        guard var index = tokens[start..<end].firstIndex(where: { $0.depth == depth && $0.word == clause }) else { return [] }
        var findings: [Finding] = []
        index += 1
        while index < end, !(tokens[index].depth == depth && ["where", "returning"].contains(tokens[index].word ?? "")) {
            if tokens[index].depth == depth, let (name, _) = tableName(at: index, in: tokens), let other = colocation[name],
                other != group
            {
                findings.append(
                    Finding(
                        rule: "non-co-located join", target,
                        "\(verb) of \(target) joins \(name), which is not co-located with it"))
            }
            index += 1
        }
        return findings
    }

    /// Function rules of UPDATE and DELETE on distributed tables: no VOLATILE function; no other non-IMMUTABLE one
    /// given a column, inside CASE or COALESCE, or in RETURNING.
    private func checkModificationCalls(
        _ tokens: [SQLTokens.Token], start: Int, end: Int, target: String, verb: String
    ) -> [Finding] {
        var findings: [Finding] = []
        var caseDepth = 0
        var coalesceDepths: [Int] = []
        var returning = false
        var index = start
        while index < end {
            let token = tokens[index]
            while let last = coalesceDepths.last, token.depth < last { coalesceDepths.removeLast() }
            switch token.word {
            case "case": caseDepth += 1
            case "end" where caseDepth > 0: caseDepth -= 1
            case "coalesce" where index + 1 < end && tokens[index + 1].text == "(":
                coalesceDepths.append(token.depth + 1)
                index += 2  // past "(", which is at the outer depth
                continue
            case "returning" where token.depth == tokens[start].depth: returning = true
            default: break
            }
            if let name = callName(at: index, in: tokens), let volatile = nonImmutable[name] {
                let arguments = argumentTokens(after: index, in: tokens)
                let columnArgument = arguments.contains { $0.kind == .word && !Self.argumentKeywords.contains($0.text) }
                if volatile {
                    findings.append(Finding(rule: "volatile in modification", target, "\(name)() in a \(verb)"))
                } else if columnArgument {
                    findings.append(
                        Finding(
                            rule: "stable function of a column", target,
                            "\(name)() given a column in a \(verb) (Citus: STABLE functions cannot take column references there)")
                    )
                } else if caseDepth > 0 || !coalesceDepths.isEmpty {
                    findings.append(
                        Finding(rule: "non-immutable in CASE/COALESCE", target, "\(name)() inside CASE or COALESCE in a \(verb)"))
                } else if returning {
                    findings.append(Finding(rule: "non-immutable in RETURNING", target, "\(name)() in RETURNING of a \(verb)"))
                }
            }
            index += 1
        }
        return findings
    }

    /// Words that may appear in a function's arguments without being columns.
    static let argumentKeywords: Set<String> = [
        "interval", "timestamp", "timestamptz", "date", "time", "zone", "at", "text", "true", "false", "null", "as",
        "bigint", "int", "integer", "numeric", "jsonb", "uuid", "epoch", "from", "month", "day", "minute", "hour",
    ]

    /// The name of the function called at `index` (`now`, `cdp.f`), if a call starts there.
    private func callName(at index: Int, in tokens: [SQLTokens.Token]) -> String? {
        guard let word = tokens[index].identifier else { return nil }
        if tokens[index].word != nil, Self.stableKeywords.contains(word) { return word }
        guard index + 1 < tokens.count, tokens[index + 1].text == "(" else { return nil }
        if index >= 2, tokens[index - 1].text == ".", let schema = tokens[index - 2].identifier {
            return schema == "pg_catalog" ? word : "\(schema).\(word)"
        }
        if index >= 1, tokens[index - 1].text == "." { return nil }
        return word
    }

    /// The tokens inside the parentheses of the call at `index`.
    private func argumentTokens(after index: Int, in tokens: [SQLTokens.Token]) -> [SQLTokens.Token] {
        guard index + 1 < tokens.count, tokens[index + 1].text == "(" else { return [] }
        let depth = tokens[index + 1].depth + 1
        var result: [SQLTokens.Token] = []
        var position = index + 2
        while position < tokens.count, tokens[position].depth >= depth {
            if tokens[position].depth == depth - 1 { break }
            result.append(tokens[position])
            position += 1
        }
        return result
    }

    /// The index after the statement part starting at `start`: the end, or the parenthesis closing around it.
    private func statementPartEnd(_ tokens: [SQLTokens.Token], from start: Int, depth: Int) -> Int {
        var index = start
        while index < tokens.count, tokens[index].depth >= depth { index += 1 }
        return index
    }

    /// Calls of non-IMMUTABLE functions among `tokens`, as names.
    private func calls(in tokens: ArraySlice<SQLTokens.Token>) -> [String] {
        let list = Array(tokens)
        return list.indices.compactMap { index in
            callName(at: index, in: list).flatMap { nonImmutable[$0] != nil ? $0 : nil }
        }
    }

    /// Every `cdp.name` the statement mentions.
    private func tablesNamed(in tokens: [SQLTokens.Token]) -> [String] {
        var names: [String] = []
        for index in tokens.indices {
            if let (name, _) = tableName(at: index, in: tokens), !names.contains(name) { names.append(name) }
        }
        return names
    }

    /// The qualified `schema.name` starting at `index`, with the index after it.
    private func tableName(at index: Int, in tokens: [SQLTokens.Token]) -> (String, Int)? {
        guard index + 2 < tokens.count, let schema = tokens[index].identifier, tokens[index + 1].text == ".",
            let name = tokens[index + 2].identifier
        else { return nil }
        // `cdp.f(` is a function, except after INTO, where a column list follows the table.
        if index + 3 < tokens.count, tokens[index + 3].text == "(", index == 0 || tokens[index - 1].word != "into" {
            return nil
        }
        return ("\(schema).\(name)", index + 3)
    }
}

extension DistributedSQLLint.Finding {
    init(rule: String, _ table: String, _ detail: String) {
        self.init(rule: rule, table: table, detail: detail)
    }
}

/// SQL split into tokens: words (lower-cased), quoted identifiers, strings, numbers, parameters and punctuation, each
/// with its parenthesis depth. Comments and whitespace are dropped.
struct SQLTokens {
    struct Token: Sendable {
        enum Kind: Sendable { case word, quotedIdentifier, string, dollarQuoted, number, parameter, punctuation }
        let kind: Kind
        let text: String
        let depth: Int
        /// The lower-cased word, for unquoted words.
        var word: String? { kind == .word ? text : nil }
        /// The identifier a word or quoted identifier names.
        var identifier: String? { kind == .word || kind == .quotedIdentifier ? text : nil }
    }

    let tokens: [Token]

    init(_ sql: String) {
        let bytes = Array(sql.utf8)
        var tokens: [Token] = []
        var index = 0
        var depth = 0
        func isWordByte(_ byte: UInt8) -> Bool {
            (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x5F || byte == 0x24 || byte >= 0x80
        }
        func text(_ range: Range<Int>) -> String { String(decoding: bytes[range], as: UTF8.self) }
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case 0x20, 0x09, 0x0A, 0x0D, 0x0C:
                index += 1
            case 0x2D where index + 1 < bytes.count && bytes[index + 1] == 0x2D:  // -- comment
                while index < bytes.count, bytes[index] != 0x0A { index += 1 }
            case 0x2F where index + 1 < bytes.count && bytes[index + 1] == 0x2A:  // /* comment */, nested
                var nesting = 0
                while index < bytes.count {
                    if bytes[index] == 0x2F, index + 1 < bytes.count, bytes[index + 1] == 0x2A {
                        nesting += 1
                        index += 2
                    } else if bytes[index] == 0x2A, index + 1 < bytes.count, bytes[index + 1] == 0x2F {
                        nesting -= 1
                        index += 2
                        if nesting == 0 { break }
                    } else {
                        index += 1
                    }
                }
            case 0x27, 0x22:  // 'string' or "identifier", the quote doubled inside
                let start = index + 1
                index += 1
                while index < bytes.count {
                    if bytes[index] == byte {
                        if index + 1 < bytes.count, bytes[index + 1] == byte {
                            index += 2
                            continue
                        }
                        break
                    }
                    index += 1
                }
                let inside = text(start..<min(index, bytes.count))
                tokens.append(
                    byte == 0x27
                        ? Token(kind: .string, text: inside, depth: depth)
                        : Token(kind: .quotedIdentifier, text: Self.unquoted(inside), depth: depth))
                index += 1
            case 0x24:  // $1 or $tag$ ... $tag$
                let start = index
                index += 1
                if index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 {
                    while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 { index += 1 }
                    tokens.append(Token(kind: .parameter, text: text(start..<index), depth: depth))
                    continue
                }
                while index < bytes.count, bytes[index] != 0x24, isWordByte(bytes[index]) { index += 1 }
                guard index < bytes.count, bytes[index] == 0x24 else {
                    tokens.append(Token(kind: .punctuation, text: "$", depth: depth))
                    index = start + 1
                    continue
                }
                let tag = Array(bytes[start...index])
                index += 1
                var end = index
                while end + tag.count <= bytes.count, Array(bytes[end..<(end + tag.count)]) != tag { end += 1 }
                let bodyEnd = min(end, bytes.count)
                tokens.append(Token(kind: .dollarQuoted, text: text(index..<bodyEnd), depth: depth))
                index = min(bodyEnd + tag.count, bytes.count)
            case 0x28:
                tokens.append(Token(kind: .punctuation, text: "(", depth: depth))
                depth += 1
                index += 1
            case 0x29:
                depth = max(0, depth - 1)
                tokens.append(Token(kind: .punctuation, text: ")", depth: depth))
                index += 1
            case 0x30...0x39:
                let start = index
                while index < bytes.count, isWordByte(bytes[index]) || bytes[index] == 0x2E { index += 1 }
                tokens.append(Token(kind: .number, text: text(start..<index), depth: depth))
            default:
                if isWordByte(byte) {
                    let start = index
                    // E'...' strings: the E is a prefix.
                    while index < bytes.count, isWordByte(bytes[index]) { index += 1 }
                    if index < bytes.count, bytes[index] == 0x27, index - start == 1, bytes[start] | 0x20 == 0x65 {
                        continue  // the string is read next
                    }
                    tokens.append(Token(kind: .word, text: text(start..<index).lowercased(), depth: depth))
                } else {
                    tokens.append(Token(kind: .punctuation, text: text(index..<(index + 1)), depth: depth))
                    index += 1
                }
            }
        }
        self.tokens = tokens
    }

    private static func unquoted(_ text: String) -> String {
        var result = ""
        var previousQuote = false
        for character in text {
            if character == "\"", previousQuote {
                previousQuote = false
                continue
            }
            previousQuote = character == "\""
            result.append(character)
        }
        return result
    }

    /// The tokens of each statement (split at top-level semicolons).
    func statements() -> [[Token]] {
        var result: [[Token]] = [[]]
        for token in tokens {
            if token.kind == .punctuation, token.text == ";", token.depth == 0 {
                result.append([])
            } else {
                result[result.count - 1].append(token)
            }
        }
        return result.filter { !$0.isEmpty }
    }
}
