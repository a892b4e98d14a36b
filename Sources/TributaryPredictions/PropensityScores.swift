import Foundation
import Logging
import Postgres
import TributaryModel

/// What a propensity model predicts.
public struct PropensitySettings: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        /// The profile does the goal event within the window.
        case goal
        /// The profile does nothing at all within the window (no event of any kind).
        case churn
    }

    /// The score's name: `cdp.profile_propensities.name` (lower case letters, digits and `_`, starting with a letter).
    public var name: String
    public var kind: Kind
    /// The goal event (a `track` call's `event`); nil for churn.
    public var goalEvent: String?
    /// The window after the scoring time, in days (7 to 90).
    public var windowDays: Int
    /// The L2 penalty of the logistic regression (on standardized features).
    public var l2: Double
    /// Below it nothing is published.
    public var qualityBar: QualityBar

    public init(
        name: String, kind: Kind, goalEvent: String? = nil, windowDays: Int = 30, l2: Double = 1,
        qualityBar: QualityBar = QualityBar()
    ) {
        self.name = name
        self.kind = kind
        self.goalEvent = goalEvent
        self.windowDays = windowDays
        self.l2 = l2
        self.qualityBar = qualityBar
    }

    /// Refuses settings no model can be trained with, naming the setting.
    public func validate() throws {
        guard SQLNames.isPlain(name, leadingUnderscore: false) else {
            throw PredictionError(
                "propensity name '\(name)': use 1 to 63 lower case letters, digits and _, starting with a letter")
        }
        switch kind {
        case .goal:
            guard let goalEvent, !goalEvent.isEmpty else {
                throw PredictionError("propensity '\(name)': a goal event is needed (or choose churn)")
            }
        case .churn:
            if goalEvent != nil { throw PredictionError("propensity '\(name)': churn takes no goal event") }
        }
        guard (7...90).contains(windowDays) else {
            throw PredictionError("propensity '\(name)': window of \(windowDays) days; it must be 7 to 90 days")
        }
        guard l2.isFinite, l2 > 0 else { throw PredictionError("propensity '\(name)': l2 \(l2) must be more than 0") }
    }
}

/// A published propensity model (a row of `cdp.propensity_models`).
public struct PropensityModel: Sendable, Equatable {
    public var id: Int64
    public var settings: PropensitySettings
    /// The validation: a model trained on features as of `trainingCutoff` (labels from the window after it), tested
    /// on the profiles as of `validationCutoff` (labels from the window after that).
    public var trainingCutoff: Date
    public var validationCutoff: Date
    public var trainingExamples: Int
    public var trainingPositives: Int
    public var validationExamples: Int
    public var validationPositives: Int
    public var auc: Double
    public var logLoss: Double
    /// The positive rate of the top 10% by score over the overall positive rate, on the validation period.
    public var liftTopDecile: Double?
    /// The published model: trained on the features as of `validationCutoff` and the window after it (the latest
    /// labels there are).
    public var model: LogisticModel
    public var trainedAt: Date
}

/// Propensity scores: a regularized logistic regression on point-in-time examples, validated on a later period,
/// published only above the quality bar.
///
/// Examples as of a cutoff time C are the profiles with an event in the year before C, each with features from its
/// events before C (event counts over 7, 30 and 365 days, active days, goal events over 30 and 365 days and their
/// value, days since the last event and the last goal event, days since the first event in the year), and as label
/// whether the goal happened in [C, C + window). With `asOf` the training time T and window W: a model trained as of
/// T − 2W is tested on the examples as of T − W (AUC, log loss, lift); above the bar, the model trained as of T − W is
/// published and every profile with an event in the year before T scored, with its percentile.
public struct PropensityScores: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// The feature names, in column order.
    static let featureNames = [
        "events_7d", "events_30d", "events_365d", "active_days_30d", "goal_30d", "goal_365d", "goal_value_365d",
        "days_since_last_event", "days_since_goal", "tenure_days",
    ]

    /// Profiles with an event in the year before `cutoff`, their features, and (if `labelled`) their labels.
    static func examples(
        _ db: PostgresConnection, _ settings: PropensitySettings, cutoff: Date, labelled: Bool
    ) async throws -> (profiles: [UUID], features: FeatureMatrix, labels: [Bool]) {
        let goal = settings.goalEvent
        let windowEnd = cutoff.addingTimeInterval(Double(settings.windowDays) * 86_400)
        // Positive: the goal within the window; for churn, no event at all within it.
        let label: PostgresQuery =
            !labelled
            ? "false"
            : settings.kind == .churn
                ? """
                NOT EXISTS (SELECT 1 FROM cdp.events AS w WHERE w.profile_id = f.profile_id
                            AND w.timestamp >= \(cutoff) AND w.timestamp < \(windowEnd))
                """
                : """
                EXISTS (SELECT 1 FROM cdp.events AS w WHERE w.profile_id = f.profile_id AND w.event = \(goal)
                        AND w.timestamp >= \(cutoff) AND w.timestamp < \(windowEnd))
                """
        let rows = try await db.query(
            """
            SELECT f.*, \(label) FROM (
                SELECT e.profile_id,
                       count(*) FILTER (WHERE e.timestamp >= \(cutoff) - interval '7 days')::float8,
                       count(*) FILTER (WHERE e.timestamp >= \(cutoff) - interval '30 days')::float8,
                       count(*)::float8,
                       count(DISTINCT (e.timestamp AT TIME ZONE 'UTC')::date)
                           FILTER (WHERE e.timestamp >= \(cutoff) - interval '30 days')::float8,
                       count(*) FILTER (WHERE e.event = \(goal) AND e.timestamp >= \(cutoff) - interval '30 days')::float8,
                       count(*) FILTER (WHERE e.event = \(goal))::float8,
                       coalesce(sum(cdp.jsonb_float8(e.properties -> 'revenue')) FILTER (WHERE e.event = \(goal)), 0)::float8,
                       extract(epoch FROM \(cutoff) - max(e.timestamp))::float8 / 86400,
                       coalesce(extract(epoch FROM \(cutoff) - max(e.timestamp) FILTER (WHERE e.event = \(goal)))::float8 / 86400,
                                400),
                       extract(epoch FROM \(cutoff) - min(e.timestamp))::float8 / 86400
                FROM cdp.events AS e
                WHERE e.profile_id IS NOT NULL AND e.timestamp < \(cutoff) AND e.timestamp >= \(cutoff) - interval '365 days'
                GROUP BY e.profile_id
            ) AS f (profile_id, events_7d, events_30d, events_365d, active_days_30d, goal_30d, goal_365d, goal_value_365d,
                    days_since_last_event, days_since_goal, tenure_days)
            ORDER BY f.profile_id
            """)
        var profiles: [UUID] = []
        var values: [Double] = []
        var labels: [Bool] = []
        profiles.reserveCapacity(rows.count)
        values.reserveCapacity(rows.count * featureNames.count)
        labels.reserveCapacity(rows.count)
        for row in rows {
            profiles.append(try row[0].decode(UUID.self))
            for column in 1...featureNames.count {
                let value = try row[column].decode(Double.self)
                // Counts and money on a log scale; days as they are.
                values.append(column <= 7 ? log1p(max(0, value)) : value)
            }
            labels.append(try row[featureNames.count + 1].decode(Bool.self))
        }
        return (profiles, try FeatureMatrix(names: featureNames, values: values), labels)
    }

    /// Trains, validates and (above the quality bar) publishes a model, and scores every profile with an event in the
    /// year before `asOf`, in one transaction; returns the model and the rows written. Below the bar it throws a
    /// ``PredictionError`` naming the figure, and nothing changes.
    @discardableResult
    /// `progress` hears each phase as it ends.
    public func train(
        _ settings: PropensitySettings, asOf: Date = Date(), progress: (@Sendable (String) -> Void)? = nil
    ) async throws -> (
        model: PropensityModel, scored: Int
    ) {
        try settings.validate()
        return try await client.withTransaction { tx in
            try await tx.advisoryTransactionLock(CustomerBasePredictions.lock)
            return try await train(tx, settings, asOf: asOf, progress: progress)
        }
    }

    func train(
        _ tx: PostgresConnection, _ settings: PropensitySettings, asOf: Date,
        progress: (@Sendable (String) -> Void)? = nil
    ) async throws -> (
        model: PropensityModel, scored: Int
    ) {
        let started = ContinuousClock.now
        let window = Double(settings.windowDays) * 86_400
        let validationCutoff = asOf.addingTimeInterval(-window)
        let trainingCutoff = asOf.addingTimeInterval(-2 * window)
        let training = try await Self.examples(tx, settings, cutoff: trainingCutoff, labelled: true)
        let validation = try await Self.examples(tx, settings, cutoff: validationCutoff, labelled: true)
        let positives = training.labels.count { $0 }
        progress?(
            "built \(training.labels.count) training examples (\(positives) positive) and \(validation.labels.count) "
                + "test examples in \(ContinuousClock.now - started); training")
        let what =
            "propensity '\(settings.name)' (\(settings.kind == .churn ? "churn" : "goal '\(settings.goalEvent ?? "")'") "
            + "within \(settings.windowDays) days)"
        do {
            try settings.qualityBar.checkCounts(positives: positives, negatives: training.labels.count - positives)
        } catch let error as PropensityError {
            throw PredictionError(
                "\(what) not published: \(error) (training as of \(PostgresTime.format(trainingCutoff)), "
                    + "\(training.labels.count) profiles)")
        }
        let validated: LogisticModel
        let final: LogisticModel
        do {
            validated = try LogisticModel.fit(training.features, labels: training.labels, l2: settings.l2)
        } catch let error as PropensityError {
            throw PredictionError("\(what) not published: \(error)")
        }
        let predicted = validated.probabilities(validation.features)
        let auc = ClassifierMetrics.auc(scores: predicted, labels: validation.labels)
        let validationPositives = validation.labels.count { $0 }
        do {
            try settings.qualityBar.check(
                auc: auc, positives: positives, negatives: training.labels.count - positives)
            guard validationPositives > 0, validationPositives < validation.labels.count else {
                throw PropensityError.aucUnavailable
            }
            final = try LogisticModel.fit(validation.features, labels: validation.labels, l2: settings.l2)
        } catch let error as PropensityError {
            throw PredictionError(
                "\(what) not published: \(error) (trained as of \(PostgresTime.format(trainingCutoff)) on "
                    + "\(training.labels.count) profiles, \(positives) positive; tested as of "
                    + "\(PostgresTime.format(validationCutoff)) on \(validation.labels.count) profiles, "
                    + "\(validationPositives) positive)")
        }
        progress?("trained and tested (AUC \(auc.map { String($0) } ?? "n/a")) after \(ContinuousClock.now - started); scoring")
        let logLoss = ClassifierMetrics.logLoss(probabilities: predicted, labels: validation.labels)
        let lift = ClassifierMetrics.lift(scores: predicted, labels: validation.labels)
        let modelJSON = String(decoding: try JSONEncoder().encode(final), as: UTF8.self)
        let duration = ContinuousClock.now - started
        let id = try await tx.query(
            """
            INSERT INTO cdp.propensity_models (name, kind, goal_event, window_days, training_cutoff, validation_cutoff,
                training_examples, training_positives, validation_examples, validation_positives, auc, log_loss,
                lift_top_decile, model, duration_ms)
            VALUES (\(settings.name), \(settings.kind.rawValue), \(settings.goalEvent), \(settings.windowDays),
                \(trainingCutoff), \(validationCutoff), \(training.labels.count), \(positives), \(validation.labels.count),
                \(validationPositives), \(auc ?? .nan), \(logLoss), \(lift), \(modelJSON)::jsonb, \(Double(duration.milliseconds)))
            RETURNING model_id
            """
        ).scalar(Int64.self)
        let model = PropensityModel(
            id: id, settings: settings, trainingCutoff: trainingCutoff, validationCutoff: validationCutoff,
            trainingExamples: training.labels.count, trainingPositives: positives,
            validationExamples: validation.labels.count, validationPositives: validationPositives, auc: auc ?? .nan,
            logLoss: logLoss, liftTopDecile: lift, model: final, trainedAt: Date())
        let scored = try await Self.score(tx, model, asOf: asOf)
        logger.info(
            "predictions: propensity published",
            metadata: [
                "name": "\(settings.name)", "model": "\(id)", "auc": "\(auc ?? .nan)", "scored": "\(scored)",
                "ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
        return (model, scored)
    }

    /// Scores every profile with an event in the year before `asOf` with the latest published model `name`.
    @discardableResult
    public func score(_ name: String, asOf: Date = Date()) async throws -> (model: PropensityModel, scored: Int) {
        try await client.withTransaction { tx in
            try await tx.advisoryTransactionLock(CustomerBasePredictions.lock)
            guard let model = try await Self.latest(tx, name: name) else {
                throw PredictionError(
                    "no propensity model '\(name)' yet (run `tributary predictions propensity \(name) …` first)")
            }
            return (model, try await Self.score(tx, model, asOf: asOf))
        }
    }

    /// Replaces the scores of `model`'s name by those of every profile with an event in the year before `asOf`.
    static func score(_ tx: PostgresConnection, _ model: PropensityModel, asOf: Date) async throws -> Int {
        let current = try await examples(tx, model.settings, cutoff: asOf, labelled: false)
        let probabilities = model.model.probabilities(current.features)
        let percentiles = ClassifierMetrics.percentiles(probabilities)
        let scoredAt = PostgresTime.format(asOf)
        try await tx.execute("DELETE FROM cdp.profile_propensities WHERE name = \(model.settings.name)")
        return try await tx.copyIn(
            "COPY cdp.profile_propensities (profile_id, name, model_id, probability, percentile, scored_at) FROM STDIN"
        ) { writer in
            // The name is checked to be letters, digits and _ (nothing to escape in COPY text).
            let prefix = "\t\(model.settings.name)\t\(model.id)\t"
            for index in current.profiles.indices {
                try await writer.write(
                    current.profiles[index].uuidString + prefix + "\(probabilities[index])\t\(percentiles[index])\t\(scoredAt)\n")
            }
        }
    }

    /// The worker's schedule for every published model: trained again with the same settings when the data it was
    /// trained on ends `retrainEvery` before `now`, scored again when its scores are as of `rescoreEvery` before
    /// `now`. Returns what it did, by name: "retrained" or "rescored". A model that no longer passes its quality bar
    /// keeps its previous scores (the error is logged).
    public func runIfDue(
        now: Date = Date(), retrainEvery: Duration = .seconds(7 * 86_400), rescoreEvery: Duration = .seconds(86_400)
    ) async throws -> [String: String] {
        func seconds(_ duration: Duration) -> Double { Double(duration.milliseconds) / 1000 }
        var done: [String: String] = [:]
        for model in try await models() {
            let trainedThrough = model.validationCutoff.addingTimeInterval(Double(model.settings.windowDays) * 86_400)
            do {
                let action = try await client.withTransaction { tx -> String? in
                    guard
                        try await tx.query("SELECT pg_try_advisory_xact_lock(\(CustomerBasePredictions.lock.value))")
                            .scalar(Bool.self)
                    else { return nil }
                    if now.timeIntervalSince(trainedThrough) >= seconds(retrainEvery) {
                        _ = try await train(tx, model.settings, asOf: now)
                        return "retrained"
                    }
                    let scoredAt = try await tx.query(
                        "SELECT max(scored_at) FROM cdp.profile_propensities WHERE name = \(model.settings.name)"
                    ).scalar(Date?.self)
                    if scoredAt.map({ now.timeIntervalSince($0) >= seconds(rescoreEvery) }) ?? true {
                        _ = try await Self.score(tx, model, asOf: now)
                        return "rescored"
                    }
                    return nil
                }
                if let action { done[model.settings.name] = action }
            } catch let error as PredictionError {
                logger.error("predictions: \(error)")
            }
        }
        return done
    }

    /// The latest published model of each name.
    public func models() async throws -> [PropensityModel] {
        try await client.withConnection { db in
            let names = try await db.query("SELECT DISTINCT name FROM cdp.propensity_models ORDER BY name").map {
                try $0.decode(String.self)
            }
            var result: [PropensityModel] = []
            for name in names { if let model = try await Self.latest(db, name: name) { result.append(model) } }
            return result
        }
    }

    static func latest(_ db: PostgresConnection, name: String) async throws -> PropensityModel? {
        guard
            let row = try await db.query(
                """
                SELECT model_id, kind, goal_event, window_days, training_cutoff, validation_cutoff, training_examples,
                       training_positives, validation_examples, validation_positives, auc, log_loss, lift_top_decile,
                       model::text, trained_at
                FROM cdp.propensity_models WHERE name = \(name) ORDER BY model_id DESC LIMIT 1
                """
            ).first
        else { return nil }
        func cell<T: PostgresDecodable>(_ index: Int, _ type: T.Type = T.self) throws -> T { try row[index].decode(T.self) }
        let model = try JSONDecoder().decode(LogisticModel.self, from: Data(try cell(13, String.self).utf8))
        guard let kind = PropensitySettings.Kind(rawValue: try cell(1)) else {
            throw PredictionError("propensity model '\(name)' has an unknown kind")
        }
        return PropensityModel(
            id: try cell(0),
            settings: PropensitySettings(
                name: name, kind: kind, goalEvent: try cell(2), windowDays: try cell(3), l2: model.l2),
            trainingCutoff: try cell(4), validationCutoff: try cell(5), trainingExamples: try cell(6),
            trainingPositives: try cell(7), validationExamples: try cell(8), validationPositives: try cell(9),
            auc: try cell(10), logLoss: try cell(11), liftTopDecile: try cell(12), model: model, trainedAt: try cell(14))
    }
}
