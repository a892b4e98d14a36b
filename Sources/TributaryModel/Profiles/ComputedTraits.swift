import Foundation

/// A problem with profile configuration (computed trait definitions, the catalog, profile views), naming where it is.
public struct ProfileError: ReportedError, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A computed trait: an aggregation over a profile's events, with event and property filters and a time window.
///
/// This is both the typed Swift DSL and, through `Codable`, its JSON form (kept in a file in git and applied with
/// `tributary traits apply`). In Swift the catalog's typed constants keep definitions well-typed:
///
/// ```swift
/// let traits: [ComputedTrait] = [
///     .sum("lifetime_value", Events.OrderCompleted.revenue, of: "Order Completed"),
///     .count("orders_30d", of: "Order Completed", within: .days(30)) { Events.OrderCompleted.revenue > 10.0 },
///     .mostFrequent("favourite_category", Events.ProductViewed.category, of: "Product Viewed"),
/// ]
/// // .sum("x", Events.ProductViewed.category)   does not compile: a String property cannot be summed
/// ```
public struct ComputedTrait: Sendable, Equatable, Codable {
    /// The aggregation.
    public enum Aggregate: String, Sendable, Codable, CaseIterable {
        case count, sum, average, min, max, first, last
        case distinctCount = "distinct_count"
        case mostFrequent = "most_frequent"
        case daysSinceFirst = "days_since_first"
        case daysSinceLast = "days_since_last"

        public init(from decoder: any Decoder) throws { self = try decodeKnownCase(decoder, named: "aggregate") }

        /// Whether the aggregation reads a property (all but count and the days-since ones).
        public var needsProperty: Bool {
            switch self {
            case .count, .daysSinceFirst, .daysSinceLast: false
            default: true
            }
        }

        /// Whether the property must be numeric.
        public var needsNumber: Bool { [.sum, .average, .min, .max].contains(self) }
    }

    /// The trait's name: its key in `computed_traits` and its column in `cdp.profiles`.
    public var name: String
    public var aggregate: Aggregate
    /// The event property aggregated (for every aggregate except count and days since first/last).
    public var property: String?
    /// Only events with one of these names (the `event` of track calls); nil: every event.
    public var events: [String]?
    /// Only calls of these types (`track`, `page`, `screen`, `identify`, `group`, `alias`); nil: every type.
    public var types: [String]?
    /// Only events whose properties meet every condition.
    public var `where`: [PropertyCondition]?
    /// Only events within this window before the time of computation.
    public var within: Window?
    public var description: String?

    public init(
        _ name: String, _ aggregate: Aggregate, property: String? = nil, events: [String]? = nil, types: [String]? = nil,
        where conditions: [PropertyCondition]? = nil, within: Window? = nil, description: String? = nil
    ) {
        self.name = name
        self.aggregate = aggregate
        self.property = property
        self.events = events
        self.types = types
        self.where = conditions
        self.within = within
        self.description = description
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, aggregate, property, events, types, `where`, within, description
    }

    /// The value of the optional `kind` key that marks an aggregate (the default; see ``PredictiveTrait``).
    public static let kind = "aggregate"

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: ["name", "kind"] + CodingKeys.allCases.map(\.rawValue).dropFirst())
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        aggregate = try container.decode(Aggregate.self, forKey: .aggregate)
        property = try container.decodeIfPresent(String.self, forKey: .property)
        events = try container.decodeIfPresent([String].self, forKey: .events)
        types = try container.decodeIfPresent([String].self, forKey: .types)
        self.where = try container.decodeIfPresent([PropertyCondition].self, forKey: .where)
        within = try container.decodeIfPresent(Window.self, forKey: .within)
        description = try container.decodeIfPresent(String.self, forKey: .description)
    }
}

/// A time window ending at the moment traits are computed.
public struct Window: Sendable, Equatable, Codable {
    public var days: Int
    public init(days: Int) { self.days = days }
    public static func days(_ days: Int) -> Window { Window(days: days) }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: ["days"])
        days = try decoder.container(keyedBy: CodingKeys.self).decode(Int.self, forKey: .days)
    }
}

/// A condition on one event property.
public struct PropertyCondition: Sendable, Equatable, Codable {
    public enum Operator: String, Sendable, Codable, CaseIterable {
        case equal = "="
        case notEqual = "!="
        case greater = ">"
        case greaterOrEqual = ">="
        case less = "<"
        case lessOrEqual = "<="
        case `in`
        case contains
        case exists
        case notExists = "not_exists"

        public init(from decoder: any Decoder) throws { self = try decodeKnownCase(decoder, named: "operator") }

        var isOrdering: Bool { [.greater, .greaterOrEqual, .less, .lessOrEqual].contains(self) }
    }

    public var property: String
    public var op: Operator
    public var value: ConditionValue?

    public init(property: String, op: Operator, value: ConditionValue? = nil) {
        self.property = property
        self.op = op
        self.value = value
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case property, op, value }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        property = try container.decode(String.self, forKey: .property)
        op = try container.decode(Operator.self, forKey: .op)
        value = try container.decodeIfPresent(ConditionValue.self, forKey: .value)
    }
}

/// A literal in a property condition: a string, number, boolean or a list of them (for `in`).
public enum ConditionValue: Sendable, Equatable, Codable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case list([ConditionValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let flag = try? container.decode(Bool.self) {
            self = .bool(flag)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else if let text = try? container.decode(String.self) {
            self = .string(text)
        } else if let list = try? container.decode([ConditionValue].self) {
            self = .list(list)
        } else {
            throw DecodingError.typeMismatch(
                ConditionValue.self,
                .init(codingPath: decoder.codingPath, debugDescription: "must be a string, number, boolean or a list of them"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let text): try container.encode(text)
        case .number(let number): try container.encode(number)
        case .bool(let flag): try container.encode(flag)
        case .list(let list): try container.encode(list)
        }
    }

    /// The catalog type this literal has (a list: the type of its first element).
    var valueType: ValueType? {
        switch self {
        case .string: .string
        case .number(let number): number == number.rounded() ? .integer : .double
        case .bool: .boolean
        case .list(let items): items.first?.valueType
        }
    }

    var typeName: String {
        switch self {
        case .string: "string"
        case .number: "number"
        case .bool: "boolean"
        case .list: "list"
        }
    }
}

/// A Swift value usable as a literal in a property condition.
public protocol ConditionLiteral: CatalogValue {
    var conditionValue: ConditionValue { get }
}

extension String: ConditionLiteral { public var conditionValue: ConditionValue { .string(self) } }
extension Int: ConditionLiteral { public var conditionValue: ConditionValue { .number(Double(self)) } }
extension Double: ConditionLiteral { public var conditionValue: ConditionValue { .number(self) } }
extension Bool: ConditionLiteral { public var conditionValue: ConditionValue { .bool(self) } }

// MARK: - The typed DSL

/// Collects property conditions: `{ Events.OrderCompleted.revenue > 100.0; Events.OrderCompleted.currency == "EUR" }`.
@resultBuilder
public enum ConditionBuilder {
    public static func buildExpression(_ condition: PropertyCondition) -> [PropertyCondition] { [condition] }
    public static func buildBlock(_ parts: [PropertyCondition]...) -> [PropertyCondition] { parts.flatMap { $0 } }
    public static func buildOptional(_ part: [PropertyCondition]?) -> [PropertyCondition] { part ?? [] }
    public static func buildEither(first: [PropertyCondition]) -> [PropertyCondition] { first }
    public static func buildEither(second: [PropertyCondition]) -> [PropertyCondition] { second }
    public static func buildArray(_ parts: [[PropertyCondition]]) -> [PropertyCondition] { parts.flatMap { $0 } }
}

public func == <V: ConditionLiteral>(lhs: Property<V>, rhs: V) -> PropertyCondition {
    PropertyCondition(property: lhs.key, op: .equal, value: rhs.conditionValue)
}
public func != <V: ConditionLiteral>(lhs: Property<V>, rhs: V) -> PropertyCondition {
    PropertyCondition(property: lhs.key, op: .notEqual, value: rhs.conditionValue)
}
public func > <V: NumericCatalogValue & ConditionLiteral>(lhs: Property<V>, rhs: V) -> PropertyCondition {
    PropertyCondition(property: lhs.key, op: .greater, value: rhs.conditionValue)
}
public func >= <V: NumericCatalogValue & ConditionLiteral>(lhs: Property<V>, rhs: V) -> PropertyCondition {
    PropertyCondition(property: lhs.key, op: .greaterOrEqual, value: rhs.conditionValue)
}
public func < <V: NumericCatalogValue & ConditionLiteral>(lhs: Property<V>, rhs: V) -> PropertyCondition {
    PropertyCondition(property: lhs.key, op: .less, value: rhs.conditionValue)
}
public func <= <V: NumericCatalogValue & ConditionLiteral>(lhs: Property<V>, rhs: V) -> PropertyCondition {
    PropertyCondition(property: lhs.key, op: .lessOrEqual, value: rhs.conditionValue)
}

extension Property where Value: ConditionLiteral {
    /// The property equals one of `values`.
    public func isIn(_ values: [Value]) -> PropertyCondition {
        PropertyCondition(property: key, op: .in, value: .list(values.map(\.conditionValue)))
    }
}

extension Property where Value == String {
    /// The property is a string containing `text`.
    public func contains(_ text: String) -> PropertyCondition {
        PropertyCondition(property: key, op: .contains, value: .string(text))
    }
}

extension Property {
    /// The property is present and not null.
    public var exists: PropertyCondition { PropertyCondition(property: key, op: .exists) }
    /// The property is absent or null.
    public var isNull: PropertyCondition { PropertyCondition(property: key, op: .notExists) }
}

extension ComputedTrait {
    private static func make(
        _ name: String, _ aggregate: Aggregate, property: String?, events: [String], within: Window?,
        _ conditions: () -> [PropertyCondition]
    ) -> ComputedTrait {
        let conditions = conditions()
        return ComputedTrait(
            name, aggregate, property: property, events: events.isEmpty ? nil : events,
            where: conditions.isEmpty ? nil : conditions, within: within)
    }

    /// The number of matching events.
    public static func count(
        _ name: String, of events: String..., within: Window? = nil,
        @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    ) -> ComputedTrait {
        make(name, .count, property: nil, events: events, within: within, conditions)
    }

    /// The sum of a numeric property over matching events.
    public static func sum<V: NumericCatalogValue>(
        _ name: String, _ property: Property<V>, of events: String..., within: Window? = nil,
        @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    ) -> ComputedTrait {
        make(name, .sum, property: property.key, events: events, within: within, conditions)
    }

    /// The average of a numeric property over matching events.
    public static func average<V: NumericCatalogValue>(
        _ name: String, _ property: Property<V>, of events: String..., within: Window? = nil,
        @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    ) -> ComputedTrait {
        make(name, .average, property: property.key, events: events, within: within, conditions)
    }

    /// The smallest value of a numeric property over matching events.
    public static func min<V: NumericCatalogValue>(
        _ name: String, _ property: Property<V>, of events: String..., within: Window? = nil,
        @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    ) -> ComputedTrait {
        make(name, .min, property: property.key, events: events, within: within, conditions)
    }

    /// The largest value of a numeric property over matching events.
    public static func max<V: NumericCatalogValue>(
        _ name: String, _ property: Property<V>, of events: String..., within: Window? = nil,
        @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    ) -> ComputedTrait {
        make(name, .max, property: property.key, events: events, within: within, conditions)
    }

    /// The property's value on the earliest matching event that has it.
    public static func first<V>(
        _ name: String, _ property: Property<V>, of events: String..., within: Window? = nil,
        @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    ) -> ComputedTrait {
        make(name, .first, property: property.key, events: events, within: within, conditions)
    }

    /// The property's value on the latest matching event that has it.
    public static func last<V>(
        _ name: String, _ property: Property<V>, of events: String..., within: Window? = nil,
        @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    ) -> ComputedTrait {
        make(name, .last, property: property.key, events: events, within: within, conditions)
    }

    /// The number of distinct values of the property over matching events.
    public static func distinctCount<V>(
        _ name: String, _ property: Property<V>, of events: String..., within: Window? = nil,
        @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    ) -> ComputedTrait {
        make(name, .distinctCount, property: property.key, events: events, within: within, conditions)
    }

    /// The most frequent value of the property over matching events (ties: the smallest value).
    public static func mostFrequent<V>(
        _ name: String, _ property: Property<V>, of events: String..., within: Window? = nil,
        @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    ) -> ComputedTrait {
        make(name, .mostFrequent, property: property.key, events: events, within: within, conditions)
    }

    /// Whole days since the earliest matching event.
    public static func daysSinceFirst(
        _ name: String, of events: String..., @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    ) -> ComputedTrait {
        make(name, .daysSinceFirst, property: nil, events: events, within: nil, conditions)
    }

    /// Whole days since the latest matching event.
    public static func daysSinceLast(
        _ name: String, of events: String..., @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    ) -> ComputedTrait {
        make(name, .daysSinceLast, property: nil, events: events, within: nil, conditions)
    }

    /// Whether the value can change with time alone, without a new event (a window, or days since).
    public var isTimeDependent: Bool {
        within != nil || aggregate == .daysSinceFirst || aggregate == .daysSinceLast
    }

    /// The catalog type of this trait's values (nil: whatever the property holds, kept as JSON).
    package func valueType(catalog: Catalog?) -> ValueType? {
        switch aggregate {
        case .count, .distinctCount, .daysSinceFirst, .daysSinceLast: return .integer
        case .sum, .average, .min, .max: return .double
        case .first, .last, .mostFrequent:
            guard let property, let catalog else { return nil }
            let types = Set((events ?? []).compactMap { catalog.propertyType(event: $0, key: property) })
            return types.count == 1 ? types.first : nil
        }
    }
}

// MARK: - The definitions file

/// Settings of the built-in RFM (recency, frequency, monetary) scores.
public struct RFMSettings: Sendable, Equatable, Codable {
    /// Compute RFM scores at all.
    public var enabled: Bool
    /// The purchase event.
    public var event: String
    /// The numeric property of the purchase event holding its value.
    public var revenueProperty: String

    public init(enabled: Bool = true, event: String = "Order Completed", revenueProperty: String = "revenue") {
        self.enabled = enabled
        self.event = event
        self.revenueProperty = revenueProperty
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case enabled, event, revenueProperty }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = RFMSettings()
        enabled = try container.decodeIfPresent(Bool.self, forKey: .enabled) ?? defaults.enabled
        event = try container.decodeIfPresent(String.self, forKey: .event) ?? defaults.event
        revenueProperty = try container.decodeIfPresent(String.self, forKey: .revenueProperty) ?? defaults.revenueProperty
    }

    /// The computed trait columns RFM adds.
    public static let traitNames = ["rfm_recency", "rfm_frequency", "rfm_monetary", "rfm_score"]
}

/// The computed trait definitions in force: the JSON file applied with `tributary traits apply`.
public struct ComputedTraitDefinitions: Sendable, Equatable, Codable {
    public var computedTraits: [ComputedTrait]
    public var rfm: RFMSettings

    /// The predictive traits: the entries of `computedTraits` with `"kind": "prediction"`.
    public var predictions: [PredictiveTrait]

    public init(
        computedTraits: [ComputedTrait] = [], predictions: [PredictiveTrait] = [], rfm: RFMSettings = RFMSettings()
    ) {
        self.computedTraits = computedTraits
        self.predictions = predictions
        self.rfm = rfm
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case computedTraits, rfm }

    /// One entry of `computedTraits`: an aggregate (no `kind`, or `"kind": "aggregate"`) or a prediction.
    private enum Entry: Decodable {
        case aggregate(ComputedTrait)
        case prediction(PredictiveTrait)

        enum Keys: String, CodingKey { case kind }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Keys.self)
            switch try container.decodeIfPresent(String.self, forKey: .kind) {
            case nil, ComputedTrait.kind?: self = .aggregate(try ComputedTrait(from: decoder))
            case PredictiveTrait.kind?: self = .prediction(try PredictiveTrait(from: decoder))
            case let other?:
                throw DecodingError.dataCorruptedError(
                    forKey: .kind, in: container,
                    debugDescription:
                        "unknown kind '\(other)'; use \(ComputedTrait.kind) (the default) or \(PredictiveTrait.kind)")
            }
        }
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let entries = try container.decodeIfPresent([Entry].self, forKey: .computedTraits) ?? []
        computedTraits = entries.compactMap { if case .aggregate(let trait) = $0 { trait } else { nil } }
        predictions = entries.compactMap { if case .prediction(let trait) = $0 { trait } else { nil } }
        rfm = try container.decodeIfPresent(RFMSettings.self, forKey: .rfm) ?? RFMSettings()
    }

    /// Aggregates first, then predictions (the canonical order: stored and checksummed).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        var entries = container.nestedUnkeyedContainer(forKey: .computedTraits)
        for trait in computedTraits { try entries.encode(trait) }
        for trait in predictions { try entries.encode(trait) }
        try container.encode(rfm, forKey: .rfm)
    }

    /// The predictive trait named `name`, if one is defined.
    public func prediction(_ name: String) -> PredictiveTrait? { predictions.first { $0.name == name } }

    /// Columns of `cdp.profiles` that computed traits cannot be named after.
    public static let reservedNames: Set<String> = [
        "profile_id", "traits", "computed_traits", "first_seen_at", "last_seen_at", "event_count", "updated_at",
    ]
    static let callTypes: Set<String> = ["identify", "track", "page", "screen", "group", "alias"]

    /// Reads and validates a definitions file; errors name the path of the problem.
    public static func parse(_ data: Data, catalog: Catalog? = nil) throws -> ComputedTraitDefinitions {
        let definitions: ComputedTraitDefinitions
        do {
            definitions = try JSONValueDecoder().decode(ComputedTraitDefinitions.self, from: data)
        } catch let error as DecodingError {
            throw ProfileError(describe(error))
        } catch let error as ProfileError {
            throw error
        }
        try definitions.validate(catalog: catalog)
        return definitions
    }

    /// The canonical JSON form (sorted keys), as stored and checksummed.
    public func canonicalJSON() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }

    /// Checks names, required fields, operators against values and, when a catalog is given, property types.
    public func validate(catalog: Catalog?) throws {
        var names: [String: Int] = [:]
        for (index, trait) in computedTraits.enumerated() {
            let path = "computedTraits[\(index)]"
            guard Self.isValidName(trait.name) else {
                throw ProfileError(
                    "\(path).name: '\(trait.name)' is not a valid name (lower-case letters, digits and _, starting with a letter or _, at most 63 bytes)"
                )
            }
            if Self.reservedNames.contains(trait.name) || (rfm.enabled && RFMSettings.traitNames.contains(trait.name)) {
                throw ProfileError("\(path).name: '\(trait.name)' is reserved for a built-in column of cdp.profiles")
            }
            if let earlier = names[trait.name] {
                throw ProfileError("\(path).name: '\(trait.name)' is already the name of computedTraits[\(earlier)]")
            }
            names[trait.name] = index
            if trait.aggregate.needsProperty, (trait.property ?? "").isEmpty {
                throw ProfileError("\(path).property: required for aggregate '\(trait.aggregate.rawValue)'")
            }
            if !trait.aggregate.needsProperty, let property = trait.property {
                throw ProfileError(
                    "\(path).property: aggregate '\(trait.aggregate.rawValue)' takes no property (got '\(property)')")
            }
            if let events = trait.events {
                if events.isEmpty {
                    throw ProfileError("\(path).events: must list at least one event (leave it out for every event)")
                }
                if let blank = events.firstIndex(where: { $0.isEmpty || $0.utf8.contains(0) }) {
                    throw ProfileError("\(path).events[\(blank)]: an event name must not be empty or contain NUL")
                }
            }
            if let types = trait.types {
                if let unknown = types.firstIndex(where: { !Self.callTypes.contains($0) }) {
                    throw ProfileError(
                        "\(path).types[\(unknown)]: unknown call type '\(types[unknown])'; use \(Self.callTypes.sorted().joined(separator: ", "))"
                    )
                }
            }
            if let window = trait.within, !(1...36_500).contains(window.days) {
                throw ProfileError("\(path).within.days: must be between 1 and 36500, got \(window.days)")
            }
            if let property = trait.property {
                try checkText(property, at: "\(path).property")
                if let type = propertyType(property, of: trait, catalog: catalog),
                    trait.aggregate.needsNumber, !type.isNumeric
                {
                    throw ProfileError(
                        "\(path).property: aggregate '\(trait.aggregate.rawValue)' needs a number; property '\(property)' is \(type)"
                    )
                }
            }
            for (position, condition) in (trait.where ?? []).enumerated() {
                try validate(condition, of: trait, catalog: catalog, at: "\(path).where[\(position)]")
            }
        }
        var predicted: [PredictiveTrait.Predict: String] = [:]
        var seen: Set<String> = []
        for trait in predictions {
            let path = "computedTraits (prediction '\(trait.name)')"
            try trait.validate(at: path)
            if Self.reservedNames.contains(trait.name) || (rfm.enabled && RFMSettings.traitNames.contains(trait.name)) {
                throw ProfileError("\(path).name: '\(trait.name)' is reserved for a built-in column of cdp.profiles")
            }
            if let earlier = names[trait.name] {
                throw ProfileError("\(path).name: '\(trait.name)' is already the name of computedTraits[\(earlier)]")
            }
            if !seen.insert(trait.name).inserted {
                throw ProfileError("\(path).name: '\(trait.name)' is the name of two predictions")
            }
            if !trait.predict.isPropensity {
                if let other = predicted[trait.predict] {
                    throw ProfileError(
                        "\(path).predict: '\(other)' already predicts \(trait.predict.rawValue); one model serves both, define it once"
                    )
                }
                predicted[trait.predict] = trait.name
            }
        }
        if rfm.enabled {
            if rfm.event.isEmpty { throw ProfileError("rfm.event: must not be empty") }
            try checkText(rfm.event, at: "rfm.event")
            try checkText(rfm.revenueProperty, at: "rfm.revenueProperty")
            if let type = catalog?.propertyType(event: rfm.event, key: rfm.revenueProperty), !type.isNumeric {
                throw ProfileError(
                    "rfm.revenueProperty: property '\(rfm.revenueProperty)' of '\(rfm.event)' is \(type), not a number")
            }
        }
    }

    private func checkText(_ text: String, at path: String) throws {
        if text.isEmpty || text.utf8.contains(0) { throw ProfileError("\(path): must not be empty or contain NUL") }
    }

    /// The property's type in the catalog, on the first of the trait's events the catalog types it for; nil without
    /// a catalog, without named events, or when the catalog does not know the property on them.
    private func propertyType(_ property: String, of trait: ComputedTrait, catalog: Catalog?) -> ValueType? {
        guard let catalog, let events = trait.events else { return nil }
        return events.lazy.compactMap { catalog.propertyType(event: $0, key: property) }.first
    }

    private func validate(_ condition: PropertyCondition, of trait: ComputedTrait, catalog: Catalog?, at path: String) throws {
        try Self.validate(
            condition.property, condition.op, condition.value,
            type: propertyType(condition.property, of: trait, catalog: catalog),
            subject: "property", keyPath: "\(path).property", at: path)
    }

    /// Checks one comparison: the key, the operator against its value, and the value against the catalog `type` (nil:
    /// unknown). With `timestamps`, ordering operators also take an ISO 8601 string (compared as a timestamp).
    static func validate(
        _ key: String, _ op: PropertyCondition.Operator, _ value: ConditionValue?, type: ValueType?, timestamps: Bool = false,
        subject: String, keyPath: String, at path: String
    ) throws {
        if key.isEmpty || key.utf8.contains(0) { throw ProfileError("\(keyPath): must not be empty or contain NUL") }
        switch op {
        case .exists, .notExists:
            if value != nil { throw ProfileError("\(path).value: operator '\(op.rawValue)' takes no value") }
            return
        default:
            guard let value else { throw ProfileError("\(path).value: required for operator '\(op.rawValue)'") }
            switch (op, value) {
            case (.in, .list(let items)):
                if items.isEmpty { throw ProfileError("\(path).value: 'in' needs at least one value") }
                if items.contains(where: { if case .list = $0 { true } else { false } }) {
                    throw ProfileError("\(path).value: 'in' takes a list of strings, numbers or booleans, not nested lists")
                }
                if items.contains(where: { if case .string(let text) = $0 { text.utf8.contains(0) } else { false } }) {
                    throw ProfileError("\(path).value: must not contain NUL")
                }
            case (.in, _): throw ProfileError("\(path).value: 'in' needs a list, got \(value.typeName)")
            case (_, .list): throw ProfileError("\(path).value: operator '\(op.rawValue)' takes one value, got a list")
            case (.contains, .string(let text)):
                if text.utf8.contains(0) { throw ProfileError("\(path).value: must not contain NUL") }
            case (.contains, _): throw ProfileError("\(path).value: 'contains' needs a string, got \(value.typeName)")
            case (let op, .number(let number)) where op.isOrdering:
                if !number.isFinite { throw ProfileError("\(path).value: must be a finite number") }
            case (let op, .string(let text)) where op.isOrdering && timestamps:
                if SQLRenderer.parseTimestamp(text) == nil {
                    throw ProfileError(
                        "\(path).value: operator '\(op.rawValue)' needs a number or an ISO 8601 timestamp, got '\(text)'")
                }
                if let type, type != .timestamp {
                    throw ProfileError("\(path): \(subject) '\(key)' is \(type), got a timestamp")
                }
                return
            case (let op, _) where op.isOrdering:
                throw ProfileError(
                    "\(path).value: operator '\(op.rawValue)' needs a number\(timestamps ? " or an ISO 8601 timestamp" : ""), got \(value.typeName)"
                )
            case (_, .string(let text)):
                if text.utf8.contains(0) { throw ProfileError("\(path).value: must not contain NUL") }
            default: break
            }
            if let type, let given = value.valueType, !compatible(type, given) {
                throw ProfileError("\(path): \(subject) '\(key)' is \(type), got \(value.typeName)")
            }
        }
    }

    static func compatible(_ type: ValueType, _ given: ValueType) -> Bool {
        switch type {
        case .integer, .double: given.isNumeric
        case .string, .timestamp: given == .string
        case .boolean: given == .boolean
        case .object, .array: false
        }
    }

    static func isValidName(_ name: String) -> Bool { SQLNames.isPlain(name) }
}

// MARK: - Decoding helpers

private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Decodes a string as one of an enum's cases; anything else is an error that lists the cases:
/// `unknown aggregate 'avg'; use count, sum, …`.
package func decodeKnownCase<T: RawRepresentable & CaseIterable>(_ decoder: any Decoder, named kind: String) throws -> T
where T.RawValue == String {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let value = T(rawValue: text) else {
        throw DecodingError.dataCorrupted(
            .init(
                codingPath: decoder.codingPath,
                debugDescription: "unknown \(kind) '\(text)'; use \(T.allCases.map(\.rawValue).joined(separator: ", "))"))
    }
    return value
}

/// Refuses keys a definition does not know: a misspelt `whre` must not silently match every event.
package func rejectUnknownKeys(_ decoder: any Decoder, known: [String]) throws {
    let container = try decoder.container(keyedBy: AnyKey.self)
    if let unknown = container.allKeys.map(\.stringValue).sorted().first(where: { !known.contains($0) }) {
        throw DecodingError.dataCorrupted(
            .init(
                codingPath: decoder.codingPath + [AnyKey(stringValue: unknown)],
                debugDescription: "unknown key; known keys are \(known.joined(separator: ", "))"))
    }
}

/// A decoding error as `path: problem`, for example `computedTraits[2].within.days: must be an integer`.
package func describe(_ error: DecodingError) -> String {
    func path(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : "." + key.stringValue
            }
        }
        return text.isEmpty ? "(document)" : text
    }
    switch error {
    case .typeMismatch(let type, let context):
        return "\(path(context.codingPath)): must be \(expected(type))"
    case .valueNotFound(let type, let context):
        return "\(path(context.codingPath)): must be \(expected(type)), got null"
    case .keyNotFound(let key, let context):
        return "\(path(context.codingPath + [key])): required"
    case .dataCorrupted(let context):
        if context.codingPath.isEmpty {
            return "(document): not valid JSON (\(context.underlyingError.map { "\($0)" } ?? context.debugDescription))"
        }
        return "\(path(context.codingPath)): \(context.debugDescription)"
    @unknown default:
        return "\(error)"
    }
}

private func expected(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: "a string"
    case is any FixedWidthInteger.Type: "an integer"
    case is Double.Type, is Float.Type: "a number"
    case is Bool.Type: "true or false"
    case is ConditionValue.Type: "a string, number, boolean or a list of them"
    case is [String].Type: "a list of strings"
    default: "\(type)".hasPrefix("Array") ? "a list" : "an object"
    }
}
