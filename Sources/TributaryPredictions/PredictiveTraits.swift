import Foundation
import Logging
import Postgres
import Synchronization
import TributaryModel
import TributaryProfiles

/// Keeps the models behind the predictive traits of the computed traits file (``PredictiveTrait``) in line with the
/// file: `tributary traits apply` runs what a changed file needs at once, the worker what is missing or stale.
///
/// - Customer-base traits share one fit, on the RFM settings' purchase event and revenue property, with the traits'
///   horizons; it is fitted when there is none or the latest was fitted with other settings (then
///   ``CustomerBasePredictions/runIfDue(now:refitEvery:rescoreEvery:)`` keeps it current).
/// - Each propensity trait is a model of its name, trained when there is none or the latest predicts something else
///   (then ``PropensityScores/runIfDue(now:retrainEvery:rescoreEvery:)`` keeps it current).
/// - Recommendations are computed when the file defines them and they are missing, older than a day, or were
///   defined differently.
///
/// A model below its quality bar (or data that cannot be fitted) leaves the trait NULL and is tried again a day later;
/// the reason is reported, never an error of the file.
public struct PredictiveTraits: Sendable {
    let client: PostgresClient
    let logger: Logger
    /// When each refused trait was last tried (the worker tries again after `retryEvery`).
    private let attempts = Attempts()

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// What was done for one trait.
    public enum Action: Sendable, Equatable, CustomStringConvertible {
        /// The customer-base models were fitted (fit id) and every buyer scored.
        case fitted(Int64, scored: Int)
        /// A propensity model was trained and published (model id) and every active profile scored.
        case trained(Int64, scored: Int)
        /// Recommendations were computed for this many profiles.
        case recommended(profiles: Int)
        /// Nothing was needed.
        case current
        /// Nothing is published: the reason (quality bar, too little data).
        case refused(String)

        /// Whether nothing was published.
        public var isRefused: Bool { if case .refused = self { true } else { false } }

        public var description: String {
            switch self {
            case .fitted(let fit, let scored): "fitted (fit \(fit)), \(scored) buyers scored"
            case .trained(let model, let scored): "trained (model \(model)), \(scored) profiles scored"
            case .recommended(let profiles): "recommendations computed for \(profiles) profiles"
            case .current: "current"
            case .refused(let reason): "nothing published: \(reason)"
            }
        }
    }

    /// One trait's outcome.
    public struct Outcome: Sendable, Equatable {
        public var trait: String
        public var action: Action
    }

    // MARK: - Settings the file gives

    /// The customer-base settings of the file's customer-base traits (nil: it has none). `latest` gives what the
    /// file does not say (time unit, discount rate).
    public static func customerBaseSettings(
        _ definitions: ComputedTraitDefinitions, latest: CustomerBaseSettings? = nil
    ) -> CustomerBaseSettings? {
        let traits = definitions.predictions.filter(\.predict.isCustomerBase)
        guard !traits.isEmpty else { return nil }
        let defaults = CustomerBaseSettings()
        return CustomerBaseSettings(
            purchaseEvent: definitions.rfm.event, revenueProperty: definitions.rfm.revenueProperty,
            timeUnitDays: latest?.timeUnitDays ?? defaults.timeUnitDays,
            purchasesDays: traits.first { $0.predict == .expectedPurchases }?.within?.days ?? defaults.purchasesDays,
            lifetimeDays: traits.first { $0.predict == .predictedLifetimeValue }?.within?.days ?? defaults.lifetimeDays,
            annualDiscountRate: latest?.annualDiscountRate ?? defaults.annualDiscountRate)
    }

    /// The propensity model a goal or churn trait names.
    public static func propensitySettings(_ trait: PredictiveTrait) -> PropensitySettings {
        PropensitySettings(
            name: trait.name, kind: trait.predict == .churn ? .churn : .goal, goalEvent: trait.event,
            windowDays: trait.within?.days ?? 30)
    }

    /// The recommendation settings of the file's `recommended_products` trait (nil: it has none).
    public static func recommendationSettings(_ definitions: ComputedTraitDefinitions) -> RecommendationSettings? {
        guard let trait = definitions.predictions.first(where: { $0.predict == .recommendedProducts }) else { return nil }
        let defaults = RecommendationSettings()
        return RecommendationSettings(
            events: trait.weights ?? defaults.events, purchaseEvent: definitions.rfm.event,
            productProperty: trait.property ?? defaults.productProperty,
            halfLifeDays: trait.halfLifeDays ?? defaults.halfLifeDays,
            lookbackDays: trait.within?.days ?? defaults.lookbackDays, top: trait.top ?? PredictiveTrait.defaultTop)
    }

    // MARK: - Running them

    /// Fits, trains and computes what `definitions` need and is missing or defined differently from `previous` (the
    /// file before this one) or from the stored models; recommendations also when older than `recommendEvery`.
    /// `progress` hears the phases of long runs.
    public func apply(
        _ definitions: ComputedTraitDefinitions, previous: ComputedTraitDefinitions? = nil, now: Date = Date(),
        recommendEvery: Duration? = nil, progress: (@Sendable (String) -> Void)? = nil
    ) async throws -> [Outcome] {
        var outcomes: [Outcome] = []
        let customerBase = CustomerBasePredictions(client: client, logger: logger)
        let latestFit = try await customerBase.storedFit()
        if let settings = Self.customerBaseSettings(definitions, latest: latestFit?.settings) {
            let names = definitions.predictions.filter(\.predict.isCustomerBase).map(\.name)
            let action: Action
            if let latestFit, latestFit.settings == settings {
                action = .current
            } else {
                action = try await attempt(names, at: now) {
                    let (fit, scored) = try await customerBase.fit(settings, asOf: now, progress: progress)
                    return .fitted(fit.id, scored: scored)
                }
            }
            outcomes.append(Outcome(trait: names.joined(separator: ", "), action: action))
        }
        let propensities = PropensityScores(client: client, logger: logger)
        let models = Dictionary(try await propensities.models().map { ($0.settings.name, $0) }) { first, _ in first }
        for trait in definitions.predictions where trait.predict.isPropensity {
            let settings = Self.propensitySettings(trait)
            let action: Action
            if let model = models[trait.name], model.settings.kind == settings.kind,
                model.settings.goalEvent == settings.goalEvent, model.settings.windowDays == settings.windowDays
            {
                action = .current
            } else {
                action = try await attempt([trait.name], at: now) {
                    let (model, scored) = try await propensities.train(settings, asOf: now, progress: progress)
                    return .trained(model.id, scored: scored)
                }
            }
            outcomes.append(Outcome(trait: trait.name, action: action))
        }
        if let trait = definitions.predictions.first(where: { $0.predict == .recommendedProducts }),
            let settings = Self.recommendationSettings(definitions)
        {
            let recommendations = Recommendations(client: client, logger: logger)
            let computedAt = try await recommendations.computedAt()
            let fresh = computedAt.map { at in
                recommendEvery.map { now.timeIntervalSince(at) < Double($0.milliseconds) / 1000 } ?? true
            }
            let action: Action
            if fresh == true, let previous, Self.recommendationSettings(previous) == settings {
                action = .current
            } else {
                action = try await attempt([trait.name], at: now) {
                    let report = try await recommendations.compute(settings, asOf: now, progress: progress)
                    return .recommended(profiles: report.profiles)
                }
            }
            outcomes.append(Outcome(trait: trait.name, action: action))
        }
        return outcomes
    }

    /// The worker's schedule for the traits of the stored file: what ``apply(_:previous:now:progress:)`` would do
    /// (a refused trait at most once per `retryEvery`), the recommendations again when older than
    /// `recommendEvery`. Returns what was done (nothing current).
    public func runIfDue(
        now: Date = Date(), retryEvery: Duration = .seconds(86_400), recommendEvery: Duration = .seconds(86_400)
    ) async throws -> [Outcome] {
        guard
            let definitions = try await client.withConnection({
                try await ProfileConfig.load(ComputedTraitDefinitions.self, "computed_traits", $0)
            }), !definitions.predictions.isEmpty
        else { return [] }
        let retry = Double(retryEvery.milliseconds) / 1000
        let waiting = attempts.refusedSince(now.addingTimeInterval(-retry))
        var due = definitions
        due.predictions.removeAll { waiting.contains($0.name) }
        let outcomes = try await apply(due, previous: definitions, now: now, recommendEvery: recommendEvery)
        for outcome in outcomes {
            switch outcome.action {
            case .current: continue
            case .refused(let reason):
                logger.warning(
                    "predictions: trait not published", metadata: ["trait": "\(outcome.trait)", "reason": "\(reason)"])
            default:
                logger.info("predictions: trait updated", metadata: ["trait": "\(outcome.trait)", "action": "\(outcome.action)"])
            }
        }
        return outcomes.filter { $0.action != .current }
    }

    /// Runs `work`; a ``PredictionError`` (quality bar, data) becomes `.refused` and is remembered for the retry
    /// spacing. Any other error (the database) is thrown.
    private func attempt(_ names: [String], at now: Date, _ work: () async throws -> Action) async throws -> Action {
        do {
            let action = try await work()
            attempts.succeeded(names)
            return action
        } catch let error as PredictionError {
            attempts.refused(names, at: now)
            return .refused(error.description)
        }
    }
}

/// When each trait was last refused (the customer-base traits, served by one fit, together).
private final class Attempts: Sendable {
    private let refusals = Mutex<[String: Date]>([:])

    func refused(_ names: [String], at date: Date) {
        refusals.withLock { map in for name in names { map[name] = date } }
    }

    func succeeded(_ names: [String]) {
        refusals.withLock { map in for name in names { map[name] = nil } }
    }

    func refusedSince(_ date: Date) -> Set<String> {
        refusals.withLock { map in Set(map.filter { $0.value >= date }.keys) }
    }
}
