import Crypto
import Foundation
import Postgres

/// The identity resolution rules: which identifiers count, how they are normalized, which values are refused, and
/// how many distinct values of each kind one profile may hold.
///
/// Kept as a JSON file in git and applied with `tributary identity rules apply FILE`; stored complete (defaults
/// filled in) in `cdp.identity_rules`. Every key is optional:
///
/// ```json
/// {
///   "priority": ["user_id", "email", "phone"],
///   "limits": { "user_id": 1, "email": 5, "phone": 5, "anonymous_id": 1000 },
///   "defaultLimit": 5,
///   "normalize": { "email": "email", "phone": "phone", "crm_id": "lowercase" },
///   "traitKeys": { "loyalty_number": "loyalty_id" },
///   "blocked": ["^test@example\\.com$", { "pattern": "^kiosk-", "kinds": ["anonymous_id"] }],
///   "hubThreshold": 20,
///   "hubExemptKinds": ["user_id"],
///   "maxLength": 256
/// }
/// ```
///
/// - `priority`: the order identifiers of one event are considered in. Kinds not listed follow in alphabetical
///   order, and `anonymous_id`, unless listed, comes last.
/// - `limits`: the most distinct values of a kind one profile may hold (`defaultLimit` for kinds not listed).
/// - `normalize`: `email` (trim, lower-case), `phone` (keep `+` and digits), `lowercase`, `trim` or `none`.
///   Defaults: `email` and `phone` for those kinds, `trim` for the rest.
/// - `traitKeys`: more identifiers taken from `traits` and `context.traits` (key → kind).
/// - `blocked`: case-insensitive PostgreSQL regular expressions matched against normalized values; a string applies
///   to every kind, an object to the kinds it names. These are added to the built-in ones (empty, `null`,
///   `undefined`, `anonymous`, all zeros, all dashes, ...) unless `"defaultBlocked": false`.
/// - `hubThreshold`: a value seen together with more than this many distinct identifiers of one kind is a hub and
///   stops being used for merging (kinds in `hubExemptKinds` never are).
/// - `maxLength`: identifiers longer than this (before normalization) are ignored.
public struct IdentityRules: Sendable, Equatable, Codable {
    public var priority: [String]
    public var limits: [String: Int]
    public var defaultLimit: Int
    public var normalize: [String: String]
    public var traitKeys: [String: String]
    public var blocked: [Blocked]
    public var defaultBlocked: Bool
    public var hubThreshold: Int
    public var hubExemptKinds: [String]
    public var maxLength: Int

    /// A refused value pattern, for every kind (`kinds == nil`) or for the kinds listed.
    public struct Blocked: Sendable, Equatable, Codable {
        public var pattern: String
        public var kinds: [String]?
        public init(pattern: String, kinds: [String]? = nil) {
            self.pattern = pattern
            self.kinds = kinds
        }
    }

    /// Values no real person has: empty, placeholders that SDKs and forms send, all zeros or all dashes; and for
    /// `email` and `phone`, the placeholders people type into forms instead of their own (``placeholderEmailPatterns``,
    /// ``placeholderPhonePatterns``). A placeholder typed by a handful of strangers would otherwise merge them into one
    /// profile long before it is seen often enough to count as a hub.
    public static let builtInBlocked: [Blocked] =
        [
            Blocked(pattern: "^[[:space:]]*$"),
            Blocked(pattern: "^(null|nil|none|undefined|anonymous|unknown|n/?a|\\[object object\\]|false|true|nan)$"),
            Blocked(pattern: "^[0[:space:].+-]+$"),
            Blocked(pattern: "^[-_.[:space:]]+$"),
        ] + placeholderEmailPatterns.map { Blocked(pattern: $0, kinds: ["email"]) }
        + placeholderPhonePatterns.map { Blocked(pattern: $0, kinds: ["phone"]) }

    /// Emails that stand for "no email" (matched after normalization, so lower-case and trimmed):
    /// - a mailbox that says so, at any domain: `none@…`, `noemail@…`, `no-email@…`, `nomail@…`, `noreply@…`,
    ///   `donotreply@…`, `unknown@…`, `null@…`, `na@…`, `notprovided@…`, `declined@…`;
    /// - a throw-away word at a throw-away domain: `test@test.com`, `fake@fake.com`, `test@example.com`,
    ///   `asdf@asdf.com`, `dummy@email.com`, `sample@domain.com` (`test`, `testing`, `fake`, `dummy`, `asdf`,
    ///   `qwerty`, `sample`, `abc`, `xxx`, `none` at `test`, `testing`, `fake`, `dummy`, `asdf`, `qwerty`, `sample`,
    ///   `example`, `email`, `mail`, `domain`, `none`, `abc`, `xxx` under any top-level domain).
    /// A real address at such a domain (`jane.doe@example.com`) is not refused.
    public static let placeholderEmailPatterns = [
        "^(none|no|noemail|no[-_.]e?mail|nomail|noreply|no[-_.]reply|donotreply|do[-_.]?not[-_.]?reply|unknown|null|nil|na|n/a"
            + "|notprovided|not[-_.]provided|declined|refused)@",
        "^(test|testing|fake|dummy|asdf|qwerty|sample|abc|xxx|none)@(test|testing|fake|dummy|asdf|qwerty|sample|example|email"
            + "|mail|domain|none|abc|xxx)\\.[a-z]{2,}$",
    ]

    /// Phone numbers no one answers (matched after normalization: an optional `+`, then digits): one digit repeated
    /// (`1111111111`, `+99999999`; all zeros are refused for every kind) and counting runs (`1234567890`,
    /// `0123456789`, `9876543210`). The fictional North American range 555-0100 to 555-0199 is left alone: it is what
    /// documentation and trials use.
    public static let placeholderPhonePatterns = [
        "^\\+?(1{6,}|2{6,}|3{6,}|4{6,}|5{6,}|6{6,}|7{6,}|8{6,}|9{6,})$",
        "^\\+?(0?123456789(0|01)?|9876543210?)$",
    ]

    public static let normalizationMethods = ["email", "phone", "lowercase", "trim", "none"]

    public init(
        priority: [String] = ["user_id", "email", "phone"],
        limits: [String: Int] = ["user_id": 1, "anonymous_id": 1000],
        defaultLimit: Int = 5,
        normalize: [String: String] = [:],
        traitKeys: [String: String] = [:],
        blocked: [Blocked] = [],
        defaultBlocked: Bool = true,
        hubThreshold: Int = 20,
        hubExemptKinds: [String] = ["user_id"],
        maxLength: Int = 256
    ) {
        self.priority = priority
        self.limits = limits
        self.defaultLimit = defaultLimit
        self.normalize = normalize
        self.traitKeys = traitKeys
        self.blocked = blocked
        self.defaultBlocked = defaultBlocked
        self.hubThreshold = hubThreshold
        self.hubExemptKinds = hubExemptKinds
        self.maxLength = maxLength
    }

    /// The most distinct values of `kind` one profile may hold.
    public func limit(of kind: String) -> Int { limits[kind] ?? defaultLimit }

    /// Position of `kind` in the priority order (smaller is stronger).
    public func rank(of kind: String) -> Int {
        if let index = priority.firstIndex(of: kind) { return index }
        return kind == "anonymous_id" ? priority.count + 1 : priority.count
    }

    /// The identifier a user id or anonymous id given as `raw` becomes, when its kind's normalization is plain text
    /// (`trim`, the default for kinds other than email and phone, `lowercase` or `none`), as `cdp.identity_candidates`
    /// normalizes it; nil for other normalizations and for values it would refuse for their length or control
    /// characters (blocked patterns are not checked). Cheap enough to run at ingest, where it only serves a guess.
    public func plainIdentifier(kind: String, _ raw: String) -> Identifier? {
        let method = normalize[kind] ?? (kind == "email" || kind == "phone" ? kind : "trim")
        guard raw.unicodeScalars.count <= maxLength else { return nil }
        let trimmed: Substring
        switch method {
        case "none": trimmed = Substring(raw)
        case "trim", "lowercase":
            // btrim(value, E' \t\r\n'); most ids have nothing to trim.
            func isSpace(_ scalar: Unicode.Scalar) -> Bool { scalar == " " || scalar == "\t" || scalar == "\r" || scalar == "\n" }
            let scalars = raw.unicodeScalars
            if let first = scalars.first, let last = scalars.last, !isSpace(first), !isSpace(last) {
                trimmed = Substring(raw)
            } else {
                let start = scalars.firstIndex { !isSpace($0) } ?? scalars.endIndex
                let end = scalars[start...].lastIndex { !isSpace($0) }.map { scalars.index(after: $0) } ?? start
                trimmed = Substring(scalars[start..<end])
            }
        default: return nil
        }
        let value = method == "lowercase" ? trimmed.lowercased() : String(trimmed)
        guard !value.isEmpty, !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            return nil
        }
        return Identifier(kind: kind, value: value)
    }

    /// Whether `a` comes before `b` in priority order: by kind rank, then kind name, then value (byte order, as
    /// PostgreSQL's `COLLATE "C"` sorts), so the order is total and the same in Swift and SQL.
    public func precedes(_ a: Identifier, _ b: Identifier) -> Bool {
        let ra = rank(of: a.kind), rb = rank(of: b.kind)
        if ra != rb { return ra < rb }
        if a.kind != b.kind { return a.kind.utf8.lexicographicallyPrecedes(b.kind.utf8) }
        return a.value.utf8.lexicographicallyPrecedes(b.value.utf8)
    }

    /// Whether values of `kind` may be detected as hubs.
    public func hubDetection(for kind: String) -> Bool { !hubExemptKinds.contains(kind) }

    /// Every blocked pattern that applies, built-in ones first.
    public var allBlocked: [Blocked] { (defaultBlocked ? Self.builtInBlocked : []) + blocked }

    /// The rules document the SQL extraction reads: these rules plus `blockedRegex` (kind or `*` → one regex).
    public func document() throws -> PostgresJSON {
        struct Document: Encodable {
            var rules: IdentityRules
            var blockedRegex: [String: String]
            func encode(to encoder: any Encoder) throws {
                try rules.encode(to: encoder)
                var container = encoder.container(keyedBy: Key.self)
                try container.encode(blockedRegex, forKey: Key(stringValue: "blockedRegex"))
            }
            struct Key: CodingKey {
                var stringValue: String
                var intValue: Int? { nil }
                init(stringValue: String) { self.stringValue = stringValue }
                init?(intValue: Int) { nil }
            }
        }
        return try PostgresJSON(encoding: Document(rules: self, blockedRegex: blockedRegex))
    }

    /// One alternation per kind that has patterns of its own, and `*` for every other kind.
    public var blockedRegex: [String: String] {
        let all = allBlocked
        func combined(_ patterns: [String]) -> String { patterns.map { "(?:\($0))" }.joined(separator: "|") }
        let global = all.filter { $0.kinds == nil }.map(\.pattern)
        var result: [String: String] = [:]
        if !global.isEmpty { result["*"] = combined(global) }
        let kinds = Set(all.compactMap(\.kinds).joined())
        for kind in kinds {
            result[kind] = combined(global + all.filter { $0.kinds?.contains(kind) == true }.map(\.pattern))
        }
        return result
    }

    /// SHA-256 of the complete rules, to tell whether stored rules changed.
    public func checksum() throws -> String { sha256Hex(Data(try document().text.utf8)) }

    /// Whether `name` is a valid identifier kind: a lower-case letter, then lower-case letters, digits or `_`, at most 63.
    public static func isValidKind(_ name: String) -> Bool {
        SQLNames.isPlain(name, leadingUnderscore: false)
    }

    /// Checks what can be checked without a database (regular expressions are checked by PostgreSQL when applied).
    public func validate() throws {
        func kind(_ name: String, at path: String) throws {
            guard Self.isValidKind(name) else {
                throw IdentityError(
                    "\(path): '\(name)' is not a valid kind (lower-case letters, digits and _, starting with a letter, at most 63)"
                )
            }
        }
        for (index, name) in priority.enumerated() { try kind(name, at: "priority[\(index)]") }
        if let repeated = Dictionary(grouping: priority, by: { $0 }).first(where: { $0.value.count > 1 }) {
            throw IdentityError("priority: '\(repeated.key)' is listed more than once")
        }
        for (name, limit) in limits.sorted(by: { $0.key < $1.key }) {
            try kind(name, at: "limits.\(name)")
            guard limit >= 1 else { throw IdentityError("limits.\(name): must be at least 1, got \(limit)") }
        }
        guard defaultLimit >= 1 else { throw IdentityError("defaultLimit: must be at least 1, got \(defaultLimit)") }
        for (name, method) in normalize.sorted(by: { $0.key < $1.key }) {
            try kind(name, at: "normalize.\(name)")
            guard Self.normalizationMethods.contains(method) else {
                throw IdentityError(
                    "normalize.\(name): unknown method '\(method)'; use one of \(Self.normalizationMethods.joined(separator: ", "))"
                )
            }
        }
        for (key, name) in traitKeys.sorted(by: { $0.key < $1.key }) {
            guard !key.isEmpty else { throw IdentityError("traitKeys: a trait key must not be empty") }
            try kind(name, at: "traitKeys.\(key)")
        }
        for (index, entry) in blocked.enumerated() {
            guard !entry.pattern.isEmpty else { throw IdentityError("blocked[\(index)]: the pattern is empty") }
            guard !entry.pattern.contains("\u{0}") else { throw IdentityError("blocked[\(index)]: the pattern contains NUL") }
            for (position, name) in (entry.kinds ?? []).enumerated() {
                try kind(name, at: "blocked[\(index)].kinds[\(position)]")
            }
        }
        guard hubThreshold >= 2 else { throw IdentityError("hubThreshold: must be at least 2, got \(hubThreshold)") }
        for (index, name) in hubExemptKinds.enumerated() { try kind(name, at: "hubExemptKinds[\(index)]") }
        guard (8...1_000_000).contains(maxLength) else {
            throw IdentityError("maxLength: must be between 8 and 1000000, got \(maxLength)")
        }
    }

    /// Reads a rules file; unknown keys and wrong types are errors naming their path.
    public init(json bytes: [UInt8]) throws {
        let value: JSONValue
        do { value = try JSONParser.parse(bytes) } catch { throw IdentityError("rules: \(error)") }
        guard case .object(let members) = value else { throw IdentityError("rules: must be a JSON object") }
        let known = [
            "priority", "limits", "defaultLimit", "normalize", "traitKeys", "blocked", "defaultBlocked",
            "hubThreshold", "hubExemptKinds", "maxLength",
        ]
        if let unknown = members.first(where: { !known.contains($0.0) }) {
            throw IdentityError("rules.\(unknown.0): unknown key; known keys are \(known.joined(separator: ", "))")
        }
        var rules = IdentityRules()
        func strings(_ key: String) throws -> [String]? {
            guard let item = value[key], item != .null else { return nil }
            guard case .array(let items) = item else { throw IdentityError("rules.\(key): must be an array of strings") }
            return try items.enumerated().map { index, item in
                guard case .string(let text) = item else { throw IdentityError("rules.\(key)[\(index)]: must be a string") }
                return text
            }
        }
        func integer(_ item: JSONValue, at path: String) throws -> Int {
            guard case .number(let text) = item, let number = Int(text) else {
                throw IdentityError("\(path): must be an integer")
            }
            return number
        }
        func object(_ key: String) throws -> [(String, JSONValue)]? {
            guard let item = value[key], item != .null else { return nil }
            guard case .object(let entries) = item else { throw IdentityError("rules.\(key): must be an object") }
            return entries
        }
        if let list = try strings("priority") { rules.priority = list }
        if let entries = try object("limits") {
            rules.limits = try Dictionary(
                entries.map { ($0.0, try integer($0.1, at: "rules.limits.\($0.0)")) }, uniquingKeysWith: { $1 })
            if rules.limits["user_id"] == nil { rules.limits["user_id"] = 1 }
            if rules.limits["anonymous_id"] == nil { rules.limits["anonymous_id"] = 1000 }
        }
        if let item = value["defaultLimit"], item != .null { rules.defaultLimit = try integer(item, at: "rules.defaultLimit") }
        func stringMap(_ key: String) throws -> [String: String]? {
            guard let entries = try object(key) else { return nil }
            return try Dictionary(
                entries.map { name, item in
                    guard case .string(let text) = item else { throw IdentityError("rules.\(key).\(name): must be a string") }
                    return (name, text)
                }, uniquingKeysWith: { $1 })
        }
        if let map = try stringMap("normalize") { rules.normalize = map }
        if let map = try stringMap("traitKeys") { rules.traitKeys = map }
        if let item = value["blocked"], item != .null {
            guard case .array(let items) = item else { throw IdentityError("rules.blocked: must be an array") }
            rules.blocked = try items.enumerated().map { index, item in
                switch item {
                case .string(let pattern): return Blocked(pattern: pattern)
                case .object(let entries):
                    if let unknown = entries.first(where: { $0.0 != "pattern" && $0.0 != "kinds" }) {
                        throw IdentityError("rules.blocked[\(index)].\(unknown.0): unknown key; use pattern and kinds")
                    }
                    guard case .string(let pattern)? = item["pattern"] else {
                        throw IdentityError("rules.blocked[\(index)].pattern: required, a string")
                    }
                    var kinds: [String]?
                    if let list = item["kinds"], list != .null {
                        guard case .array(let names) = list else {
                            throw IdentityError("rules.blocked[\(index)].kinds: must be an array of strings")
                        }
                        kinds = try names.enumerated().map { position, name in
                            guard case .string(let text) = name else {
                                throw IdentityError("rules.blocked[\(index)].kinds[\(position)]: must be a string")
                            }
                            return text
                        }
                    }
                    return Blocked(pattern: pattern, kinds: kinds)
                default: throw IdentityError("rules.blocked[\(index)]: must be a pattern string or {\"pattern\", \"kinds\"}")
                }
            }
        }
        if let item = value["defaultBlocked"], item != .null {
            guard case .bool(let flag) = item else { throw IdentityError("rules.defaultBlocked: must be true or false") }
            rules.defaultBlocked = flag
        }
        if let item = value["hubThreshold"], item != .null { rules.hubThreshold = try integer(item, at: "rules.hubThreshold") }
        if let list = try strings("hubExemptKinds") { rules.hubExemptKinds = list }
        if let item = value["maxLength"], item != .null { rules.maxLength = try integer(item, at: "rules.maxLength") }
        try rules.validate()
        self = rules
    }
}

/// A normalized identifier: its kind (`user_id`, `email`, ...) and value.
public struct Identifier: Hashable, Sendable, CustomStringConvertible {
    public var kind: String
    public var value: String
    public init(kind: String, value: String) {
        self.kind = kind
        self.value = value
    }

    /// Parses `KIND:VALUE` as given on the command line.
    public init(parsing text: String) throws {
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else {
            throw IdentityError("'\(text.prefix(100))' is not KIND:VALUE (for example email:jane@example.com)")
        }
        kind = String(text[..<colon])
        value = String(text[text.index(after: colon)...])
        guard IdentityRules.isValidKind(kind) else {
            throw IdentityError("'\(kind.prefix(100))' is not a valid identifier kind")
        }
    }

    public var description: String { "\(kind):\(value)" }

    /// The id of the profile this identifier founds: SHA-256 of `kind:value`, first 16 bytes, as a version 8 UUID.
    /// Identical to SQL `cdp.identity_profile_id(kind, value)`.
    public var foundedProfileID: UUID {
        var bytes = Array(SHA256.hash(data: Array("\(kind):\(value)".utf8)).prefix(16))
        bytes[6] = (bytes[6] & 0x0F) | 0x80
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        return UUID(
            uuid: (
                bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]
            ))
    }
}

/// An identity-resolution error with a message for the person who caused it.
public struct IdentityError: ReportedError {
    public let description: String
    public init(_ description: String) { self.description = description }
}
