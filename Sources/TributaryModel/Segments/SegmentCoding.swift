import Foundation

// The JSON form of segments, for files kept in git and applied with `tributary segments apply`:
//
// {"segments": [{
//     "name": "high_value", "description": "...", "realtime": false,
//     "fields": [{"name": "email", "trait": "email"}, {"name": "ltv", "computed": "lifetime_value"}],
//     "conditions": [
//         {"trait": "plan", "op": "=", "value": "pro"},
//         {"computed": "lifetime_value", "op": ">", "value": 100},
//         {"event": {"name": "Order Completed", "within": {"days": 30}, "where": [...]}, "op": ">=", "value": 2},
//         {"event": {"name": "Order Completed"}, "aggregate": "sum", "property": "revenue", "op": ">", "value": 100},
//         {"funnel": {"steps": [{"name": "Product Viewed"}, {"name": "Order Completed"}], "within": {"days": 7}}},
//         {"notSince": {"event": {"name": "Order Completed"}, "since": {"name": "Product Added"}}},
//         {"segment": "newsletter"},
//         {"anyOf": [...]}, {"allOf": [...]}, {"not": {...}}
//     ]
// }]}

extension SegmentCondition: Codable {
    private enum Key: String, CodingKey, CaseIterable {
        case trait, computed, op, value, allOf, anyOf, not, segment, event, aggregate, property, funnel, notSince
        case prediction, percentile
    }

    private enum NotSinceKey: String, CodingKey, CaseIterable { case event, since }

    /// The key that says which kind of condition an object is.
    private static let kinds: [Key] = [
        .trait, .computed, .allOf, .anyOf, .not, .segment, .event, .funnel, .notSince, .prediction,
    ]

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        let present = Self.kinds.filter { container.contains($0) }
        guard present.count == 1, let kind = present.first else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath,
                    debugDescription: present.isEmpty
                        ? "a condition needs one of the keys \(Self.kinds.map(\.rawValue).joined(separator: ", "))"
                        : "a condition has exactly one of the keys \(present.map(\.rawValue).joined(separator: ", "))"))
        }
        func only(_ keys: Key...) throws { try rejectUnknownKeys(decoder, known: keys.map(\.rawValue)) }
        switch kind {
        case .trait, .computed:
            try only(kind, .op, .value)
            let name = try container.decode(String.self, forKey: kind)
            let op = try container.decode(PropertyCondition.Operator.self, forKey: .op)
            let value = try container.decodeIfPresent(ConditionValue.self, forKey: .value)
            node = kind == .trait ? .trait(name, op, value) : .computed(name, op, value)
        case .allOf:
            try only(.allOf)
            node = .allOf(try container.decode([SegmentCondition].self, forKey: .allOf))
        case .anyOf:
            try only(.anyOf)
            node = .anyOf(try container.decode([SegmentCondition].self, forKey: .anyOf))
        case .not:
            try only(.not)
            node = .not(try container.decode(SegmentCondition.self, forKey: .not))
        case .segment:
            try only(.segment)
            node = .segment(try container.decode(String.self, forKey: .segment))
        case .event:
            try only(.event, .aggregate, .property, .op, .value)
            let event = try container.decode(Event.self, forKey: .event)
            let aggregate = try container.decodeIfPresent(EventCondition.Aggregate.self, forKey: .aggregate) ?? .count
            let property = try container.decodeIfPresent(String.self, forKey: .property)
            let op = try container.decodeIfPresent(PropertyCondition.Operator.self, forKey: .op) ?? .greaterOrEqual
            let value = try container.decodeIfPresent(Double.self, forKey: .value) ?? 1
            node = .event(EventCondition(event: event, aggregate: aggregate, property: property, op: op, value: value))
        case .funnel:
            try only(.funnel)
            node = .funnel(try container.decode(FunnelCondition.self, forKey: .funnel))
        case .notSince:
            try only(.notSince)
            let inner = try container.superDecoder(forKey: .notSince)
            try rejectUnknownKeys(inner, known: NotSinceKey.allCases.map(\.rawValue))
            let fields = try inner.container(keyedBy: NotSinceKey.self)
            node = .notSince(
                event: try fields.decode(Event.self, forKey: .event), since: try fields.decode(Event.self, forKey: .since))
        case .prediction:
            try only(.prediction, .percentile, .op, .value)
            node = .prediction(
                try container.decode(String.self, forKey: .prediction),
                percentile: try container.decodeIfPresent(Bool.self, forKey: .percentile) ?? false,
                try container.decode(PropertyCondition.Operator.self, forKey: .op),
                try container.decode(Double.self, forKey: .value))
        default:
            preconditionFailure("not a kind")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        switch node {
        case .trait(let name, let op, let value), .computed(let name, let op, let value):
            if case .trait = node {
                try container.encode(name, forKey: .trait)
            } else {
                try container.encode(name, forKey: .computed)
            }
            try container.encode(op, forKey: .op)
            try container.encodeIfPresent(value, forKey: .value)
        case .allOf(let all): try container.encode(all, forKey: .allOf)
        case .anyOf(let any): try container.encode(any, forKey: .anyOf)
        case .not(let inner): try container.encode(inner, forKey: .not)
        case .segment(let name): try container.encode(name, forKey: .segment)
        case .event(let condition):
            try container.encode(condition.event, forKey: .event)
            try container.encode(condition.aggregate, forKey: .aggregate)
            try container.encodeIfPresent(condition.property, forKey: .property)
            try container.encode(condition.op, forKey: .op)
            try container.encode(condition.value, forKey: .value)
        case .funnel(let funnel): try container.encode(funnel, forKey: .funnel)
        case .prediction(let name, let percentile, let op, let value):
            try container.encode(name, forKey: .prediction)
            if percentile { try container.encode(true, forKey: .percentile) }
            try container.encode(op, forKey: .op)
            try container.encode(value, forKey: .value)
        case .notSince(let event, let since):
            var inner = container.nestedContainer(keyedBy: NotSinceKey.self, forKey: .notSince)
            try inner.encode(event, forKey: .event)
            try inner.encode(since, forKey: .since)
        }
    }
}

extension EventCondition.Aggregate {
    public init(from decoder: any Decoder) throws { self = try decodeKnownCase(decoder, named: "aggregate") }
}

extension Segment: Codable {
    enum CodingKeys: String, CodingKey, CaseIterable { case name, description, realtime, fields, conditions }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        description = try container.decodeIfPresent(String.self, forKey: .description)
        realtime = try container.decodeIfPresent(Bool.self, forKey: .realtime) ?? false
        fields = try container.decodeIfPresent([SegmentField].self, forKey: .fields) ?? []
        conditions = try container.decodeIfPresent([SegmentCondition].self, forKey: .conditions) ?? []
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encodeIfPresent(description, forKey: .description)
        try container.encode(realtime, forKey: .realtime)
        if !fields.isEmpty { try container.encode(fields, forKey: .fields) }
        try container.encode(conditions, forKey: .conditions)
    }

    /// The canonical JSON form (sorted keys), as stored and compared.
    public func canonicalJSON() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }
}

/// A segments file: `{"segments": [...]}`, the whole set of segments in force once applied.
public struct SegmentDefinitions: Sendable, Equatable, Codable {
    public var segments: [Segment]

    public init(_ segments: [Segment]) { self.segments = segments }

    enum CodingKeys: String, CodingKey, CaseIterable { case segments }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        segments = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent([Segment].self, forKey: .segments) ?? []
    }

    /// The segment named `name`.
    public subscript(name: String) -> Segment? { segments.first { $0.name == name } }

    /// The segments whose members depend on scores (predictions, predictive traits of `computed`), directly or
    /// through the segments they refer to: the ones to refresh when scores are written.
    public func readingPredictions(computed: ComputedTraitDefinitions?) -> [String] {
        var reads: [String: Bool] = [:]
        func visit(_ segment: Segment, _ trail: Set<String>) -> Bool {
            if let known = reads[segment.name] { return known }
            let result =
                segment.readsPredictions(computed: computed)
                || segment.references.contains { name in
                    !trail.contains(name) && self[name].map { visit($0, trail.union([name])) } == true
                }
            reads[segment.name] = result
            return result
        }
        return segments.filter { visit($0, [$0.name]) }.map(\.name)
    }

    /// Reads and validates a segments file; errors name the path of the problem, for example
    /// `segments[0].conditions[2].event.where[0]: property 'revenue' is Double, got string`.
    public static func parse(
        _ data: Data, catalog: Catalog? = nil, computed: ComputedTraitDefinitions? = nil
    ) throws -> SegmentDefinitions {
        let definitions: SegmentDefinitions
        do {
            definitions = try JSONValueDecoder().decode(SegmentDefinitions.self, from: data)
        } catch let error as DecodingError {
            throw ProfileError(describe(error))
        }
        try definitions.validate(catalog: catalog, computed: computed)
        return definitions
    }

    /// Pretty-printed JSON with sorted keys, ending with a newline: the file format.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return try encoder.encode(self) + Data("\n".utf8)
    }
}
