// Placeholder until the catalog branch is merged.
public struct Catalog: Codable, Sendable, Equatable {
    public struct FieldSpec: Codable, Sendable, Equatable {
        public var type: ValueType
        public var column: String?
        public var description: String?
        public var pii: Bool?
    }
    public struct EventSpec: Codable, Sendable, Equatable {
        public var properties: [String: FieldSpec]
    }
    public var traits: [String: FieldSpec]
    public var events: [String: EventSpec]
    public func traitType(_ key: String) -> ValueType? { traits[key]?.type }
    public func propertyType(event: String, key: String) -> ValueType? { events[event]?.properties[key]?.type }
    public func columnName(forTrait key: String) -> String? { traits[key].map { $0.column ?? key } }
}
