import Foundation
import Postgres

/// A predictive trait: an entry of the computed traits file with `"kind": "prediction"`. It names a score that a
/// model gives each profile, becomes a typed column of `cdp.profiles` under its name, can be compared in segments
/// (`Computed<Double>("churn_30d") > 0.8`, `Prediction("churn_30d").percentile >= 90`) and sent by syncs as a field,
/// and tells the worker which models to keep trained.
///
/// ```json
/// {"name": "churn_30d", "kind": "prediction", "predict": "churn", "within": {"days": 30}}
/// {"name": "buys_14d", "kind": "prediction", "predict": "goal", "event": "Order Completed", "within": {"days": 14}}
/// {"name": "clv_1y", "kind": "prediction", "predict": "predicted_lifetime_value", "within": {"days": 365}}
/// {"name": "alive", "kind": "prediction", "predict": "probability_alive"}
/// {"name": "next_products", "kind": "prediction", "predict": "recommended_products", "top": 5}
/// ```
///
/// - `goal` and `churn` are propensity models (`cdp.propensity_models`, one per trait, named after it): the
///   probability that the profile does `event` (goal), or nothing at all (churn), within the next 7–90 days.
/// - `probability_alive`, `expected_purchases`, `expected_spend`, `predicted_lifetime_value` are the customer-base
///   models' scores (BG/NBD + Gamma-Gamma, one fit for all of them) over the RFM settings' purchase event and revenue
///   property; `within` is the horizon of `expected_purchases` (default 90 days) and of `predicted_lifetime_value`
///   (default 365 days).
/// - `recommended_products` is the next-best-product list (`top` products, default 10, popular products for a
///   profile without interactions); `property` names the product property (default `product_id`), `weights` the
///   interaction events and their weights, `halfLifeDays` the decay (default 30), `within` the lookback (default
///   365 days).
public struct PredictiveTrait: Sendable, Equatable, Codable {
    /// What the trait predicts.
    public enum Predict: String, Sendable, Codable, CaseIterable {
        case goal, churn
        case probabilityAlive = "probability_alive"
        case expectedPurchases = "expected_purchases"
        case expectedSpend = "expected_spend"
        case predictedLifetimeValue = "predicted_lifetime_value"
        case recommendedProducts = "recommended_products"

        public init(from decoder: any Decoder) throws { self = try decodeKnownCase(decoder, named: "prediction") }

        /// A propensity model's probability (goal, churn).
        public var isPropensity: Bool { self == .goal || self == .churn }
        /// One of the customer-base scores (a column of `cdp.profile_predictions`).
        public var isCustomerBase: Bool { !isPropensity && self != .recommendedProducts }
    }

    public var name: String
    public var predict: Predict
    /// The goal event (`goal` only).
    public var event: String?
    /// The propensity window, the customer-base horizon or the recommendations' lookback.
    public var within: Window?
    /// Recommendations: the product property.
    public var property: String?
    /// Recommendations: the interaction events and their weights.
    public var weights: [String: Double]?
    /// Recommendations: products per profile.
    public var top: Int?
    /// Recommendations: an interaction loses half its weight every this many days (default 30).
    public var halfLifeDays: Double?
    public var description: String?

    public init(
        _ name: String, _ predict: Predict, event: String? = nil, within: Window? = nil, property: String? = nil,
        weights: [String: Double]? = nil, top: Int? = nil, halfLifeDays: Double? = nil, description: String? = nil
    ) {
        self.name = name
        self.predict = predict
        self.event = event
        self.within = within
        self.property = property
        self.weights = weights
        self.top = top
        self.halfLifeDays = halfLifeDays
        self.description = description
    }

    /// The value of the `kind` key that marks a predictive trait.
    public static let kind = "prediction"

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, kind, predict, event, within, property, weights, top, halfLifeDays, description
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        predict = try container.decode(Predict.self, forKey: .predict)
        event = try container.decodeIfPresent(String.self, forKey: .event)
        within = try container.decodeIfPresent(Window.self, forKey: .within)
        property = try container.decodeIfPresent(String.self, forKey: .property)
        weights = try container.decodeIfPresent([String: Double].self, forKey: .weights)
        top = try container.decodeIfPresent(Int.self, forKey: .top)
        halfLifeDays = try container.decodeIfPresent(Double.self, forKey: .halfLifeDays)
        description = try container.decodeIfPresent(String.self, forKey: .description)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(Self.kind, forKey: .kind)
        try container.encode(predict, forKey: .predict)
        try container.encodeIfPresent(event, forKey: .event)
        try container.encodeIfPresent(within, forKey: .within)
        try container.encodeIfPresent(property, forKey: .property)
        try container.encodeIfPresent(weights, forKey: .weights)
        try container.encodeIfPresent(top, forKey: .top)
        try container.encodeIfPresent(halfLifeDays, forKey: .halfLifeDays)
        try container.encodeIfPresent(description, forKey: .description)
    }

    /// The trait's value type: a probability or amount (double), or the recommended product ids (a text array,
    /// `.array`).
    public var valueType: ValueType { predict == .recommendedProducts ? .array : .double }

    /// Recommendations per profile when `top` is not given.
    public static let defaultTop = 10

    /// Where the trait's score is stored.
    public var source: PredictionSource {
        switch predict {
        case .goal, .churn: .propensity(name: name)
        case .recommendedProducts: .recommendations(top: top ?? Self.defaultTop)
        default: .customerBase(column: predict.rawValue)
        }
    }

    /// Checks the fields `predict` takes; errors name `path` (`computedTraits[3]`).
    func validate(at path: String) throws {
        func refuse(_ key: String, _ value: Any?) throws {
            if value != nil {
                throw ProfileError("\(path).\(key): '\(predict.rawValue)' takes no \(key)")
            }
        }
        if !SQLNames.isPlain(name, leadingUnderscore: false) {
            throw ProfileError(
                "\(path).name: '\(name)' is not a valid prediction name (lower-case letters, digits and _, starting with a letter, at most 63 bytes)"
            )
        }
        if predict != .recommendedProducts {
            try refuse("property", property)
            try refuse("weights", weights)
            try refuse("top", top)
            try refuse("halfLifeDays", halfLifeDays)
        }
        switch predict {
        case .goal, .churn:
            if predict == .goal {
                guard let event, !event.isEmpty, !event.utf8.contains(0) else {
                    throw ProfileError("\(path).event: the goal event is required and must not be empty or contain NUL")
                }
            } else {
                try refuse("event", event)
            }
            guard let days = within?.days else {
                throw ProfileError("\(path).within: required (the window the prediction is about, 7 to 90 days)")
            }
            if !(7...90).contains(days) {
                throw ProfileError("\(path).within.days: a propensity window is 7 to 90 days, got \(days)")
            }
        case .probabilityAlive, .expectedSpend:
            try refuse("event", event)
            try refuse("within", within)
        case .expectedPurchases, .predictedLifetimeValue:
            try refuse("event", event)
            if let days = within?.days, !(1...3660).contains(days) {
                throw ProfileError("\(path).within.days: a horizon is 1 to 3660 days, got \(days)")
            }
        case .recommendedProducts:
            try refuse("event", event)
            if let days = within?.days, !(1...3660).contains(days) {
                throw ProfileError("\(path).within.days: the lookback is 1 to 3660 days, got \(days)")
            }
            if let top, !(1...100).contains(top) { throw ProfileError("\(path).top: 1 to 100 products, got \(top)") }
            if let halfLifeDays, !(halfLifeDays.isFinite && halfLifeDays > 0 && halfLifeDays <= 3660) {
                throw ProfileError("\(path).halfLifeDays: more than 0 and at most 3660 days, got \(halfLifeDays)")
            }
            if let property, property.isEmpty || property.utf8.contains(0) {
                throw ProfileError("\(path).property: must not be empty or contain NUL")
            }
            if let weights {
                if weights.isEmpty { throw ProfileError("\(path).weights: must name at least one event") }
                for (event, weight) in weights.sorted(by: { $0.key < $1.key })
                where event.isEmpty || event.utf8.contains(0) || !(weight.isFinite && weight > 0) {
                    throw ProfileError(
                        "\(path).weights: event '\(event)' with weight \(weight); events must be named and weights more than 0")
                }
            }
        }
    }
}

/// Where a predictive trait's value is stored, and the SQL that reads it for one profile.
public enum PredictionSource: Sendable, Equatable {
    /// A column of `cdp.profile_predictions`.
    case customerBase(column: String)
    /// `cdp.profile_propensities` of this name.
    case propensity(name: String)
    /// `cdp.profile_recommendation_lists`, or the `top` most popular products for a profile without a list.
    case recommendations(top: Int)

    /// What a segment's `{"prediction": name}` reads: the predictive trait `name` of `computed`, else the customer-base
    /// score of that column (``Prediction/customerBaseScores``), else the published propensity of that name.
    public static func named(_ name: String, in computed: ComputedTraitDefinitions?) -> PredictionSource {
        computed?.prediction(name)?.source
            ?? (Prediction.customerBaseScores.contains(name) ? .customerBase(column: name) : .propensity(name: name))
    }

    /// The value for the profile whose id is the SQL expression `profile` (a correlated subquery: NULL without a
    /// score). `percentile` reads a propensity's percentile instead of its probability.
    public func valueSQL(profile: String, percentile: Bool = false) -> PostgresQuery {
        let profile = PostgresQuery(unsafeSQL: profile)
        switch self {
        case .customerBase(let column):
            return "(SELECT x.\(identifier: column) FROM cdp.profile_predictions AS x WHERE x.profile_id = \(profile))"
        case .propensity(let name):
            return """
                (SELECT x.\(unescaped: percentile ? "percentile" : "probability") FROM cdp.profile_propensities AS x \
                WHERE x.profile_id = \(profile) AND x.name = \(name))
                """
        case .recommendations(let top):
            return """
                coalesce((SELECT x.product_ids[1:\(unescaped: String(top))] FROM cdp.profile_recommendation_lists AS x \
                WHERE x.profile_id = \(profile)), \(unescaped: Self.popularSQL(top: top)))
                """
        }
    }

    /// The `top` most popular products as a `text[]` (an uncorrelated subquery: evaluated once per statement).
    public static func popularSQL(top: Int) -> String {
        "(SELECT array_agg(x.product_id ORDER BY x.rank) FROM cdp.popular_products AS x WHERE x.rank <= \(top))"
    }
}
