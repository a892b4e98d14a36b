import Foundation
import Postgres

/// A condition a profile meets or not: the building block of segments.
///
/// The AST is opaque: conditions are made with the DSL (``Trait`` and ``Computed`` comparisons, ``Event``,
/// ``Funnel``, ``AllOf``, ``AnyOf``, ``Not``, ``InSegment``) or decoded from a segment file, and compiled to SQL by
/// ``SegmentCompiler``.
///
/// ```swift
/// Traits.plan == "pro"                                          // traits ->> plan is "pro"
/// Computed<Double>("lifetime_value") > 100.0                    // a computed trait
/// Event("Order Completed", within: .days(30)).count >= 2         // at least two orders in 30 days
/// Funnel(within: .days(1)) { Event("Product Viewed"); Event("Order Completed") }
/// Event("Order Completed").notSince(Event("Product Added"))      // abandoned cart
/// Prediction("churn_30d") > 0.8                                  // a published propensity's probability
/// Prediction("churn_30d").percentile >= 90                       // …or its percentile among profiles
/// Prediction.probabilityAlive < 0.2                              // a customer-base score
/// ```
public struct SegmentCondition: Sendable, Equatable {
    indirect enum Node: Sendable, Equatable {
        /// A profile trait (`traits`) compared with a value.
        case trait(String, PropertyCondition.Operator, ConditionValue?)
        /// A computed trait (`computed_traits`) compared with a value.
        case computed(String, PropertyCondition.Operator, ConditionValue?)
        case allOf([SegmentCondition])
        case anyOf([SegmentCondition])
        case not(SegmentCondition)
        /// Meets the conditions of another segment (compiled inline, so always current).
        case segment(String)
        /// An aggregate of matching events compared with a number.
        case event(EventCondition)
        /// Did the steps in order, each after the previous, all within a time span.
        case funnel(FunnelCondition)
        /// Did `since`, and no `event` after the latest `since`.
        case notSince(event: Event, since: Event)
        /// A predictive trait compared with a number: a customer-base score (``Prediction/customerBaseScores``) or a
        /// published propensity's probability (or, with `percentile`, its percentile 0–100). A profile without the
        /// score does not meet it.
        case prediction(String, percentile: Bool, PropertyCondition.Operator, Double)
    }

    let node: Node
    init(_ node: Node) { self.node = node }
}

/// Matching events: one event name (page and screen calls are `$page` and `$screen`, as in the catalog; `*` any call
/// of any type), property conditions, and an optional window ending now.
///
/// ```swift
/// Event("Order Completed", within: .days(30)) { Events.OrderCompleted.revenue > 100.0 }
/// Event.any(within: .days(30)).count == 0      // no activity at all in 30 days, evaluated when read
/// ```
public struct Event: Sendable, Equatable, Codable {
    /// The event name (the `event` of track calls; `$page` and `$screen` for page and screen calls; ``anyName`` for
    /// every call).
    public var name: String

    /// The name that matches every call (track, page, screen, identify, group, alias): "active in the last N days".
    public static let anyName = "*"

    /// Every call of the profile, optionally within a window: `Event.any(within: .days(30)).count == 0` is "no event
    /// of any kind in 30 days", evaluated at query time (no computed trait to refresh).
    public static func any(
        within: Window? = nil, @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }
    )
        -> Event
    {
        Event(anyName, within: within, where: conditions)
    }
    /// Every condition must hold.
    public var `where`: [PropertyCondition]?
    /// Only events in this many days before now.
    public var within: Window?

    public init(_ name: String, within: Window? = nil, @ConditionBuilder where conditions: () -> [PropertyCondition] = { [] }) {
        self.name = name
        self.within = within
        let conditions = conditions()
        self.where = conditions.isEmpty ? nil : conditions
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case name, `where`, within }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        self.where = try container.decodeIfPresent([PropertyCondition].self, forKey: .where)
        within = try container.decodeIfPresent(Window.self, forKey: .within)
    }
}

/// An aggregate over matching events compared with a number: `count >= 2`, `sum(revenue) > 100`.
public struct EventCondition: Sendable, Equatable {
    public enum Aggregate: String, Sendable, Codable, CaseIterable {
        case count, sum, average, min, max
    }

    public var event: Event
    public var aggregate: Aggregate
    /// The numeric property aggregated (all but `count`).
    public var property: String?
    public var op: PropertyCondition.Operator
    public var value: Double

    public init(
        event: Event, aggregate: Aggregate = .count, property: String? = nil, op: PropertyCondition.Operator = .greaterOrEqual,
        value: Double = 1
    ) {
        self.event = event
        self.aggregate = aggregate
        self.property = property
        self.op = op
        self.value = value
    }

    /// Whether a profile without any matching event meets the condition (`count = 0`, `sum < 10`): such conditions
    /// are compiled as the complement of the profiles that fail them.
    var holdsWithoutEvents: Bool {
        guard aggregate == .count || aggregate == .sum else { return false }
        switch op {
        case .equal: return value == 0
        case .notEqual: return value != 0
        case .greater: return 0 > value
        case .greaterOrEqual: return 0 >= value
        case .less: return 0 < value
        case .lessOrEqual: return 0 <= value
        default: return false
        }
    }
}

/// Steps done in order (each strictly after the previous one, by time then receive order), the last within `within`
/// of the first: a funnel.
public struct FunnelCondition: Sendable, Equatable, Codable {
    public var steps: [Event]
    public var within: Window

    public init(steps: [Event], within: Window) {
        self.steps = steps
        self.within = within
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case steps, within }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        steps = try container.decode([Event].self, forKey: .steps)
        within = try container.decode(Window.self, forKey: .within)
    }
}

/// A column of a segment's view besides `profile_id`: a trait or a computed trait, typed by the catalog.
public struct SegmentField: Sendable, Equatable, Codable {
    /// The column name.
    public var name: String
    /// The trait key (exactly one of `trait` and `computed`).
    public var trait: String?
    /// The computed trait name.
    public var computed: String?

    public static func trait(_ key: String, as name: String? = nil) -> SegmentField {
        SegmentField(name: name ?? CatalogNames.column(forKey: key), trait: key, computed: nil)
    }

    public static func computed(_ trait: String, as name: String? = nil) -> SegmentField {
        SegmentField(name: name ?? trait, trait: nil, computed: trait)
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case name, trait, computed }

    init(name: String, trait: String?, computed: String?) {
        self.name = name
        self.trait = trait
        self.computed = computed
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        trait = try container.decodeIfPresent(String.self, forKey: .trait)
        computed = try container.decodeIfPresent(String.self, forKey: .computed)
    }
}

/// A segment: profiles meeting every condition. It becomes the view `segments."name"` (`profile_id` plus its
/// fields), and its members are kept in `cdp.segment_members` with their entered/exited history.
///
/// ```swift
/// let highValue = Segment("high_value", fields: [.trait("email")]) {
///     Event("Order Completed", within: .days(30)).count >= 2
///     Event("Order Completed", within: .days(30)).sum(Events.OrderCompleted.revenue) > 100.0
/// }
/// ```
public struct Segment: Sendable, Equatable {
    /// The schema of the segment views.
    public static let viewSchema = "segments"

    /// The view of segment `name`, quoted: `"segments"."name"`. The one spelling of a segment's view, for the
    /// compiler that creates it and everything that reads it.
    public static func view(_ name: String) throws -> String {
        try SQLQuoting.qualified(viewSchema, name)
    }

    /// The view name in schema `segments` and the `segment` of `cdp.segment_members` (any text but NUL, at most 63
    /// bytes).
    public var name: String
    public var description: String?
    /// Every condition must hold.
    public var conditions: [SegmentCondition]
    /// Columns of the view besides `profile_id`.
    public var fields: [SegmentField]
    /// Re-evaluate a profile's membership as soon as the profile stage updates it, not only on the schedule.
    public var realtime: Bool

    public init(
        _ name: String, description: String? = nil, realtime: Bool = false, fields: [SegmentField] = [],
        @SegmentBuilder _ conditions: () -> [SegmentCondition]
    ) {
        self.name = name
        self.description = description
        self.realtime = realtime
        self.fields = fields
        self.conditions = conditions()
    }

    /// Whether the conditions read a score (a `prediction`, or a computed-trait condition on a predictive trait of
    /// `computed`), directly, without following segment references.
    func readsPredictions(computed: ComputedTraitDefinitions?) -> Bool {
        func visit(_ condition: SegmentCondition) -> Bool {
            switch condition.node {
            case .prediction: return true
            case .computed(let name, _, _): return computed?.prediction(name) != nil
            case .allOf(let all), .anyOf(let all): return all.contains(where: visit)
            case .not(let inner): return visit(inner)
            default: return false
            }
        }
        return conditions.contains(where: visit)
    }

    /// The segments this one's conditions refer to (directly).
    var references: [String] {
        var names: [String] = []
        func visit(_ condition: SegmentCondition) {
            switch condition.node {
            case .segment(let name): names.append(name)
            case .allOf(let all), .anyOf(let all): all.forEach(visit)
            case .not(let inner): visit(inner)
            default: break
            }
        }
        conditions.forEach(visit)
        return names
    }

    /// Whether membership can change with time alone (a window), without any new event.
    var isTimeDependent: Bool {
        func visit(_ condition: SegmentCondition) -> Bool {
            switch condition.node {
            case .event(let event): return event.event.within != nil
            case .funnel(let funnel): return funnel.steps.contains { $0.within != nil }
            case .notSince(let event, let since): return event.within != nil || since.within != nil
            // Scores change when they are computed again, not with the profile's events.
            case .prediction: return true
            case .allOf(let all), .anyOf(let all): return all.contains(where: visit)
            case .not(let inner): return visit(inner)
            default: return false
            }
        }
        return conditions.contains(where: visit)
    }
}
