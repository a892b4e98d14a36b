import Foundation

/// Something that is a segment condition: a comparison, ``Event`` measure, ``Funnel``, ``AllOf``, ``AnyOf``,
/// ``Not`` or ``InSegment``.
public protocol SegmentConditionConvertible: Sendable {
    var segmentCondition: SegmentCondition { get }
}

extension SegmentCondition: SegmentConditionConvertible {
    public var segmentCondition: SegmentCondition { self }
}

/// Collects segment conditions; all of them must hold.
@resultBuilder
public enum SegmentBuilder {
    public static func buildExpression(_ condition: some SegmentConditionConvertible) -> [SegmentCondition] {
        [condition.segmentCondition]
    }
    public static func buildBlock(_ parts: [SegmentCondition]...) -> [SegmentCondition] { parts.flatMap { $0 } }
    public static func buildOptional(_ part: [SegmentCondition]?) -> [SegmentCondition] { part ?? [] }
    public static func buildEither(first: [SegmentCondition]) -> [SegmentCondition] { first }
    public static func buildEither(second: [SegmentCondition]) -> [SegmentCondition] { second }
    public static func buildArray(_ parts: [[SegmentCondition]]) -> [SegmentCondition] { parts.flatMap { $0 } }
}

/// Every condition holds.
public struct AllOf: SegmentConditionConvertible {
    public let segmentCondition: SegmentCondition
    public init(@SegmentBuilder _ conditions: () -> [SegmentCondition]) {
        segmentCondition = SegmentCondition(.allOf(conditions()))
    }
}

/// At least one condition holds.
public struct AnyOf: SegmentConditionConvertible {
    public let segmentCondition: SegmentCondition
    public init(@SegmentBuilder _ conditions: () -> [SegmentCondition]) {
        segmentCondition = SegmentCondition(.anyOf(conditions()))
    }
}

/// The conditions do not all hold.
public struct Not: SegmentConditionConvertible {
    public let segmentCondition: SegmentCondition
    public init(@SegmentBuilder _ conditions: () -> [SegmentCondition]) {
        let all = conditions()
        segmentCondition = SegmentCondition(.not(all.count == 1 ? all[0] : SegmentCondition(.allOf(all))))
    }
}

/// The profile meets the conditions of another segment (evaluated now, not its stored membership).
public struct InSegment: SegmentConditionConvertible {
    public let segmentCondition: SegmentCondition
    public init(_ name: String) { segmentCondition = SegmentCondition(.segment(name)) }
}

/// Did the steps in this order, the last within `within` of the first: `Funnel(within: .days(7)) { Event("Product
/// Viewed"); Event("Order Completed") }`.
public struct Funnel: SegmentConditionConvertible {
    public let segmentCondition: SegmentCondition
    public init(within: Window, @EventStepBuilder _ steps: () -> [Event]) {
        segmentCondition = SegmentCondition(.funnel(FunnelCondition(steps: steps(), within: within)))
    }
}

/// Collects the steps of a ``Funnel``.
@resultBuilder
public enum EventStepBuilder {
    public static func buildExpression(_ event: Event) -> [Event] { [event] }
    public static func buildBlock(_ parts: [Event]...) -> [Event] { parts.flatMap { $0 } }
}

/// A computed trait of a known type, for example `Computed<Double>("lifetime_value")`.
public struct Computed<Value: CatalogValue>: Sendable, Hashable {
    /// The computed trait's name in the definitions.
    public let name: String
    public init(_ name: String) { self.name = name }
}

// MARK: - Trait and computed trait comparisons

private func trait(_ key: String, _ op: PropertyCondition.Operator, _ value: ConditionValue?) -> SegmentCondition {
    SegmentCondition(.trait(key, op, value))
}

private func computed(_ name: String, _ op: PropertyCondition.Operator, _ value: ConditionValue?) -> SegmentCondition {
    SegmentCondition(.computed(name, op, value))
}

private func isoText(_ date: Date) -> ConditionValue {
    .string(date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
}

public func == <V: ConditionLiteral>(lhs: Trait<V>, rhs: V) -> SegmentCondition { trait(lhs.key, .equal, rhs.conditionValue) }
public func != <V: ConditionLiteral>(lhs: Trait<V>, rhs: V) -> SegmentCondition { trait(lhs.key, .notEqual, rhs.conditionValue) }
public func > <V: NumericCatalogValue & ConditionLiteral>(lhs: Trait<V>, rhs: V) -> SegmentCondition {
    trait(lhs.key, .greater, rhs.conditionValue)
}
public func >= <V: NumericCatalogValue & ConditionLiteral>(lhs: Trait<V>, rhs: V) -> SegmentCondition {
    trait(lhs.key, .greaterOrEqual, rhs.conditionValue)
}
public func < <V: NumericCatalogValue & ConditionLiteral>(lhs: Trait<V>, rhs: V) -> SegmentCondition {
    trait(lhs.key, .less, rhs.conditionValue)
}
public func <= <V: NumericCatalogValue & ConditionLiteral>(lhs: Trait<V>, rhs: V) -> SegmentCondition {
    trait(lhs.key, .lessOrEqual, rhs.conditionValue)
}
public func > (lhs: Trait<Date>, rhs: Date) -> SegmentCondition { trait(lhs.key, .greater, isoText(rhs)) }
public func >= (lhs: Trait<Date>, rhs: Date) -> SegmentCondition { trait(lhs.key, .greaterOrEqual, isoText(rhs)) }
public func < (lhs: Trait<Date>, rhs: Date) -> SegmentCondition { trait(lhs.key, .less, isoText(rhs)) }
public func <= (lhs: Trait<Date>, rhs: Date) -> SegmentCondition { trait(lhs.key, .lessOrEqual, isoText(rhs)) }

public func == <V: ConditionLiteral>(lhs: Computed<V>, rhs: V) -> SegmentCondition {
    computed(lhs.name, .equal, rhs.conditionValue)
}
public func != <V: ConditionLiteral>(lhs: Computed<V>, rhs: V) -> SegmentCondition {
    computed(lhs.name, .notEqual, rhs.conditionValue)
}
public func > <V: NumericCatalogValue & ConditionLiteral>(lhs: Computed<V>, rhs: V) -> SegmentCondition {
    computed(lhs.name, .greater, rhs.conditionValue)
}
public func >= <V: NumericCatalogValue & ConditionLiteral>(lhs: Computed<V>, rhs: V) -> SegmentCondition {
    computed(lhs.name, .greaterOrEqual, rhs.conditionValue)
}
public func < <V: NumericCatalogValue & ConditionLiteral>(lhs: Computed<V>, rhs: V) -> SegmentCondition {
    computed(lhs.name, .less, rhs.conditionValue)
}
public func <= <V: NumericCatalogValue & ConditionLiteral>(lhs: Computed<V>, rhs: V) -> SegmentCondition {
    computed(lhs.name, .lessOrEqual, rhs.conditionValue)
}

extension Trait where Value: ConditionLiteral {
    /// The trait equals one of `values`.
    public func isIn(_ values: [Value]) -> SegmentCondition { trait(key, .in, .list(values.map(\.conditionValue))) }
}

extension Trait where Value == String {
    /// The trait is a string containing `text`.
    public func contains(_ text: String) -> SegmentCondition { trait(key, .contains, .string(text)) }
}

extension Trait {
    /// The trait is absent or null.
    public var isNull: SegmentCondition { trait(key, .notExists, nil) }
    /// The trait is present and not null.
    public var exists: SegmentCondition { trait(key, .exists, nil) }
}

extension Computed where Value: ConditionLiteral {
    /// The computed trait equals one of `values`.
    public func isIn(_ values: [Value]) -> SegmentCondition { computed(name, .in, .list(values.map(\.conditionValue))) }
}

extension Computed where Value == String {
    /// The computed trait is a string containing `text`.
    public func contains(_ text: String) -> SegmentCondition { computed(name, .contains, .string(text)) }
}

extension Computed {
    /// The computed trait is absent or null (for example `last` with no matching event).
    public var isNull: SegmentCondition { computed(name, .notExists, nil) }
    /// The computed trait is present and not null.
    public var exists: SegmentCondition { computed(name, .exists, nil) }
}

// MARK: - Event conditions

/// An aggregate over matching events, to compare with a number: `Event("Order Completed").count >= 2`.
public struct EventMeasure<Value: NumericCatalogValue & ConditionLiteral>: Sendable {
    let event: Event
    let aggregate: EventCondition.Aggregate
    let property: String?

    func compare(_ op: PropertyCondition.Operator, _ value: Value) -> SegmentCondition {
        guard case .number(let number) = value.conditionValue else { preconditionFailure("numeric values are numbers") }
        return SegmentCondition(
            .event(EventCondition(event: event, aggregate: aggregate, property: property, op: op, value: number)))
    }
}

public func == <V>(lhs: EventMeasure<V>, rhs: V) -> SegmentCondition { lhs.compare(.equal, rhs) }
public func != <V>(lhs: EventMeasure<V>, rhs: V) -> SegmentCondition { lhs.compare(.notEqual, rhs) }
public func > <V>(lhs: EventMeasure<V>, rhs: V) -> SegmentCondition { lhs.compare(.greater, rhs) }
public func >= <V>(lhs: EventMeasure<V>, rhs: V) -> SegmentCondition { lhs.compare(.greaterOrEqual, rhs) }
public func < <V>(lhs: EventMeasure<V>, rhs: V) -> SegmentCondition { lhs.compare(.less, rhs) }
public func <= <V>(lhs: EventMeasure<V>, rhs: V) -> SegmentCondition { lhs.compare(.lessOrEqual, rhs) }

extension Event {
    /// The number of matching events.
    public var count: EventMeasure<Int> { EventMeasure(event: self, aggregate: .count, property: nil) }
    /// The sum of a numeric property over matching events (0 without any).
    public func sum<V: NumericCatalogValue>(_ property: Property<V>) -> EventMeasure<Double> {
        EventMeasure(event: self, aggregate: .sum, property: property.key)
    }
    /// The average of a numeric property over matching events (no value without any).
    public func average<V: NumericCatalogValue>(_ property: Property<V>) -> EventMeasure<Double> {
        EventMeasure(event: self, aggregate: .average, property: property.key)
    }
    /// The smallest value of a numeric property over matching events.
    public func min<V: NumericCatalogValue & ConditionLiteral>(_ property: Property<V>) -> EventMeasure<V> {
        EventMeasure(event: self, aggregate: .min, property: property.key)
    }
    /// The largest value of a numeric property over matching events.
    public func max<V: NumericCatalogValue & ConditionLiteral>(_ property: Property<V>) -> EventMeasure<V> {
        EventMeasure(event: self, aggregate: .max, property: property.key)
    }
    /// At least one matching event.
    public var occurred: SegmentCondition { count >= 1 }
    /// No matching event.
    public var never: SegmentCondition { count == 0 }
    /// Did `since`, and this event not after the latest `since`: `Event("Order Completed").notSince(Event("Product
    /// Added", within: .days(7)))`.
    public func notSince(_ since: Event) -> SegmentCondition { SegmentCondition(.notSince(event: self, since: since)) }
}

// MARK: - Predictive traits

/// A predictive trait: a published propensity by its name (`tributary predictions propensity NAME`), or one of the
/// customer-base scores (``customerBaseScores``), compared with a number.
///
/// ```swift
/// Prediction("churn_30d") > 0.8
/// Prediction("purchase_30d").percentile >= 90
/// Prediction.predictedLifetimeValue > 500.0
/// ```
public struct Prediction: Sendable, Hashable {
    /// The customer-base scores (columns of `cdp.profile_predictions`); any other name is a propensity.
    public static let customerBaseScores = [
        "probability_alive", "expected_purchases", "expected_spend", "predicted_lifetime_value",
    ]
    public static let probabilityAlive = Prediction("probability_alive")
    public static let expectedPurchases = Prediction("expected_purchases")
    public static let expectedSpend = Prediction("expected_spend")
    public static let predictedLifetimeValue = Prediction("predicted_lifetime_value")

    public let name: String
    let percentileOf: Bool

    public init(_ name: String) {
        self.name = name
        percentileOf = false
    }

    /// The propensity's percentile among the profiles scored (0–100).
    public var percentile: Prediction { Prediction(name: name, percentile: true) }

    init(name: String, percentile: Bool) {
        self.name = name
        percentileOf = percentile
    }

    func compare(_ op: PropertyCondition.Operator, _ value: Double) -> SegmentCondition {
        SegmentCondition(.prediction(name, percentile: percentileOf, op, value))
    }
}

public func > (lhs: Prediction, rhs: Double) -> SegmentCondition { lhs.compare(.greater, rhs) }
public func >= (lhs: Prediction, rhs: Double) -> SegmentCondition { lhs.compare(.greaterOrEqual, rhs) }
public func < (lhs: Prediction, rhs: Double) -> SegmentCondition { lhs.compare(.less, rhs) }
public func <= (lhs: Prediction, rhs: Double) -> SegmentCondition { lhs.compare(.lessOrEqual, rhs) }
