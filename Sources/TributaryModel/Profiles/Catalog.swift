import Foundation

/// The typed catalog: the type of each profile trait and of each event's properties, the `cdp.profiles` column a
/// trait gets, and which traits hold personal data.
///
/// `tributary catalog infer` writes one from a sample of `cdp.events`; it is kept as a JSON file in git, edited, and
/// put in force with `tributary catalog apply FILE` (see ``CatalogStore``):
///
/// ```json
/// {
///   "traits": {
///     "lifetime_value": { "type": "double", "column": "lifetime_value", "description": "Sum of all orders, in USD" },
///     "email": { "type": "string", "pii": true }
///   },
///   "events": {
///     "Order Completed": { "properties": { "revenue": { "type": "double" } } },
///     "$page": { "properties": { "path": { "type": "string" } } }
///   }
/// }
/// ```
///
/// - `type`: `string`, `integer`, `double`, `boolean`, `timestamp`, `object` or `array` (required).
/// - `column` (traits only): the typed column of `cdp.profiles`; by default ``CatalogNames/column(forKey:)`` of the
///   key (`firstName` → `first_name`). Two traits cannot share a column, and the columns `cdp.profiles` always has
///   (``reservedColumns``) cannot be used.
/// - `description`: documentation; it becomes the doc comment of the generated Swift constant.
/// - `pii`: `true` masks the trait in the analyst views (schema `analyst`) unless the reader has `tributary_pii`;
///   `false` takes a key off the built-in list of personal keys (`cdp.pii_keys`).
///
/// Events are keyed by the `event` of track calls; page and screen calls are `$page` and `$screen`.
public struct Catalog: Codable, Sendable, Equatable {
    /// Trait key (as in `traits` and `context.traits`) → its specification.
    public var traits: [String: FieldSpec]
    /// Event name → its properties.
    public var events: [String: EventSpec]

    /// The specification of one trait or event property.
    public struct FieldSpec: Codable, Sendable, Equatable {
        public var type: ValueType
        /// The trait's typed column in `cdp.profiles` (nil: derived from the key). Always nil for properties.
        public var column: String?
        public var description: String?
        /// Whether the values are personal data (an email address, a name, a phone number, ...).
        public var pii: Bool?

        public init(type: ValueType, column: String? = nil, description: String? = nil, pii: Bool? = nil) {
            self.type = type
            self.column = column
            self.description = description
            self.pii = pii
        }
    }

    /// The properties of one event.
    public struct EventSpec: Codable, Sendable, Equatable {
        /// Property key (as in `properties`) → its specification.
        public var properties: [String: FieldSpec]
        public init(properties: [String: FieldSpec] = [:]) { self.properties = properties }
    }

    public init(traits: [String: FieldSpec] = [:], events: [String: EventSpec] = [:]) {
        self.traits = traits
        self.events = events
    }

    /// The event name page calls are catalogued under.
    public static let pageEvent = "$page"
    /// The event name screen calls are catalogued under.
    public static let screenEvent = "$screen"

    /// The columns `cdp.profiles` always has, which no trait may take.
    public static let reservedColumns = [
        "profile_id", "traits", "computed_traits", "first_seen_at", "last_seen_at", "event_count", "updated_at",
    ]

    /// PostgreSQL's identifier limit, in bytes.
    public static let maxColumnBytes = SQLNames.maxBytes

    /// The type of a trait, or nil if the catalog does not have it.
    public func traitType(_ key: String) -> ValueType? { traits[key]?.type }

    /// The type of a property of an event, or nil if the catalog does not have it.
    public func propertyType(event: String, key: String) -> ValueType? { events[event]?.properties[key]?.type }

    /// The `cdp.profiles` column of a trait (its `column`, or the one derived from its key), or nil if the catalog
    /// does not have the trait.
    public func columnName(forTrait key: String) -> String? {
        traits[key].map { $0.column ?? CatalogNames.column(forKey: key) }
    }

    /// The same catalog with every trait's column written out: the form ``CatalogStore`` stores and returns.
    public var canonical: Catalog {
        var copy = self
        for key in traits.keys { copy.traits[key]?.column = columnName(forTrait: key) }
        return copy
    }

    /// The file format: pretty-printed JSON with sorted keys, ending with a newline.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self) + Data("\n".utf8)
    }

    /// Whether `name` can be a typed column: `[a-z_][a-z0-9_]*`, at most 63 bytes.
    public static func isValidColumnName(_ name: String) -> Bool { SQLNames.isPlain(name) }

    /// Checks what parsing cannot: no empty keys or names, valid and distinct trait columns, none of them reserved.
    /// Problems are reported in key order, so the same catalog always gives the same error.
    public func validate() throws(CatalogError) {
        if traits.keys.contains("") { throw CatalogError("traits: a trait key must not be empty") }
        var owners: [String: String] = [:]
        for key in traits.keys.sorted() {
            let explicit = traits[key]?.column
            let column = explicit ?? CatalogNames.column(forKey: key)
            let path = Self.path("traits", key)
            // The column named the way the user can find it: the `column` they wrote, or the key it came from.
            let subject =
                explicit == nil
                ? "\(path): the column '\(column)' derived from the key" : "\(path).column: \(Self.quoted(column))"
            let remedy = explicit == nil ? "; set \"column\"" : ""
            guard Self.isValidColumnName(column) else {
                throw CatalogError(
                    "\(subject) is not a valid column name ([a-z_][a-z0-9_]*, at most \(Self.maxColumnBytes) bytes)")
            }
            if Self.reservedColumns.contains(column) {
                throw CatalogError(
                    "\(subject) is reserved: cdp.profiles always has the columns \(Self.reservedColumns.joined(separator: ", "))\(remedy)"
                )
            }
            if let owner = owners[column] {
                throw CatalogError("\(subject) is also the column of \(Self.path("traits", owner))\(remedy)")
            }
            owners[column] = key
        }
        if events.keys.contains("") { throw CatalogError("events: an event name must not be empty") }
        for name in events.keys.sorted() {
            let properties = events[name]?.properties ?? [:]
            let propertiesPath = Self.path(Self.path("events", name), "properties")
            if properties.keys.contains("") { throw CatalogError("\(propertiesPath): a property key must not be empty") }
            if let key = properties.keys.sorted().first(where: { properties[$0]?.column != nil }) {
                throw CatalogError("\(Self.path(propertiesPath, key)).column: only traits have columns")
            }
        }
    }

    /// `parent.key`, or `parent["key"]` (JSON-escaped) when the key is not a plain identifier, for error messages:
    /// `traits.email`, `events["Order Completed"]`.
    static func path(_ parent: String, _ key: String) -> String {
        let plain =
            key.utf8.first.map { !$0.isASCIIDigit } == true
            && key.utf8.allSatisfy { $0.isASCIILower || $0.isASCIIUpper || $0.isASCIIDigit || $0 == UInt8(ascii: "_") }
        return plain ? "\(parent).\(key)" : "\(parent)[\(JSONValue.string(key).serialized)]"
    }

    /// `'text'` for an error message, control characters written as escapes (`\n`, `\u{7}`) so it stays one line.
    static func quoted(_ text: String) -> String {
        "'"
            + text.unicodeScalars.map { $0.properties.generalCategory == .control ? $0.escaped(asASCII: true) : String($0) }
            .joined() + "'"
    }
}

/// A problem with a catalog, naming where it is: `traits.age.type: unknown type 'int' (...)`.
public struct CatalogError: ReportedError, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension Catalog {
    /// Reads a catalog file. Wrong JSON types, unknown or repeated keys and unknown value types are errors naming
    /// their path; then the catalog is validated (``validate()``).
    public static func parse(_ data: Data) throws(CatalogError) -> Catalog {
        let document: JSONValue
        do { document = try JSONParser.parse([UInt8](data)) } catch { throw CatalogError("catalog: \(error)") }
        guard case .object(let top) = document else { throw CatalogError("catalog: must be a JSON object") }
        try checkKeys(top, known: ["traits", "events"], at: nil)
        var catalog = Catalog()
        for (key, value) in try members(document["traits"], at: "traits") {
            catalog.traits[key] = try field(value, at: path("traits", key), known: ["type", "column", "description", "pii"])
        }
        for (name, value) in try members(document["events"], at: "events") {
            let eventPath = path("events", name)
            guard case .object(let entries) = value else { throw CatalogError("\(eventPath): must be an object") }
            try checkKeys(entries, known: ["properties"], at: eventPath)
            var event = EventSpec()
            let propertiesPath = path(eventPath, "properties")
            for (key, property) in try members(value["properties"], at: propertiesPath) {
                event.properties[key] = try field(property, at: path(propertiesPath, key), known: ["type", "description", "pii"])
            }
            catalog.events[name] = event
        }
        try catalog.validate()
        return catalog
    }

    /// The members of an optional object (absent or null: none); a key given twice is an error.
    private static func members(_ value: JSONValue?, at path: String) throws(CatalogError) -> [(String, JSONValue)] {
        guard let value, value != .null else { return [] }
        guard case .object(let entries) = value else { throw CatalogError("\(path): must be an object") }
        if let key = firstRepeated(entries) { throw CatalogError("\(Self.path(path, key)): given more than once") }
        return entries
    }

    /// Refuses keys not in `known` (naming the known ones) and keys given twice.
    private static func checkKeys(_ entries: [(String, JSONValue)], known: [String], at path: String?) throws(CatalogError) {
        func keyPath(_ key: String) -> String { path.map { Self.path($0, key) } ?? key }
        if let (key, _) = entries.first(where: { !known.contains($0.0) }) {
            throw CatalogError("\(keyPath(key)): unknown key; known keys are \(known.joined(separator: ", "))")
        }
        if let key = firstRepeated(entries) { throw CatalogError("\(keyPath(key)): given more than once") }
    }

    private static func firstRepeated(_ entries: [(String, JSONValue)]) -> String? {
        var seen = Set<String>()
        return entries.first { !seen.insert($0.0).inserted }?.0
    }

    private static func field(_ value: JSONValue, at path: String, known: [String]) throws(CatalogError) -> FieldSpec {
        guard case .object(let entries) = value else { throw CatalogError("\(path): must be an object") }
        try checkKeys(entries, known: known, at: path)
        let expected = "expected one of \(ValueType.allCases.map(\.rawValue).joined(separator: ", "))"
        let type: ValueType
        switch value["type"] {
        case .string(let name)?:
            guard let known = ValueType(rawValue: name) else {
                throw CatalogError("\(path).type: unknown type \(quoted(name)) (\(expected))")
            }
            type = known
        case nil, .null?: throw CatalogError("\(path).type: required (\(expected))")
        default: throw CatalogError("\(path).type: must be a string (\(expected))")
        }
        var spec = FieldSpec(type: type)
        func string(_ key: String) throws(CatalogError) -> String? {
            switch value[key] {
            case nil, .null?: return nil
            case .string(let text)?: return text
            default: throw CatalogError("\(path).\(key): must be a string")
            }
        }
        spec.column = try string("column")
        spec.description = try string("description")
        switch value["pii"] {
        case nil, .null?: break
        case .bool(let flag)?: spec.pii = flag
        default: throw CatalogError("\(path).pii: must be true or false")
        }
        return spec
    }
}
