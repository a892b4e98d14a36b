import Foundation
import Logging
import Postgres
import TributaryModel
import TributaryProfiles

/// What the customer-base models are fitted on and what their scores mean.
public struct CustomerBaseSettings: Sendable, Equatable {
    /// The purchase event (a `track` call's `event`).
    public var purchaseEvent: String
    /// The numeric property of the purchase event holding its value (a missing or non-numeric value counts as 0).
    public var revenueProperty: String
    /// The models' time unit in days (7: weeks, as in the published fits). Purchases are counted per day, whatever
    /// the unit.
    public var timeUnitDays: Double
    /// `expected_purchases` is the number of purchases expected in the next this many days.
    public var purchasesDays: Int
    /// `predicted_lifetime_value` is the spend expected in the next this many days.
    public var lifetimeDays: Int
    /// The annual rate at which future spend is discounted in `predicted_lifetime_value` (0: not discounted).
    public var annualDiscountRate: Double

    public init(
        purchaseEvent: String = "Order Completed", revenueProperty: String = "revenue", timeUnitDays: Double = 7,
        purchasesDays: Int = 90, lifetimeDays: Int = 365, annualDiscountRate: Double = 0
    ) {
        self.purchaseEvent = purchaseEvent
        self.revenueProperty = revenueProperty
        self.timeUnitDays = timeUnitDays
        self.purchasesDays = purchasesDays
        self.lifetimeDays = lifetimeDays
        self.annualDiscountRate = annualDiscountRate
    }

    /// Refuses settings no model can be fitted with, naming the setting.
    public func validate() throws {
        if purchaseEvent.isEmpty { throw PredictionError("the purchase event is empty") }
        if revenueProperty.isEmpty { throw PredictionError("the revenue property is empty") }
        if !(timeUnitDays > 0 && timeUnitDays <= 366) {
            throw PredictionError("time unit \(timeUnitDays) days: it must be more than 0 and at most 366")
        }
        if !(1...3660).contains(purchasesDays) {
            throw PredictionError("purchases horizon \(purchasesDays) days: it must be 1 to 3660")
        }
        if !(1...36600).contains(lifetimeDays) {
            throw PredictionError("lifetime horizon \(lifetimeDays) days: it must be 1 to 36600")
        }
        if !(annualDiscountRate >= 0 && annualDiscountRate < 10) {
            throw PredictionError("annual discount rate \(annualDiscountRate): it must be at least 0 and below 10")
        }
    }
}

/// A stored fit of the customer-base models (a row of `cdp.prediction_fits`).
public struct CustomerBaseFit: Sendable, Equatable {
    public var id: Int64
    public var settings: CustomerBaseSettings
    /// The calibration data: purchases from `windowStart` (the first one found) up to `windowEnd` (exclusive).
    public var windowStart: Date?
    public var windowEnd: Date
    /// Profiles with at least one purchase, and those with a repeat purchase.
    public var customers: Int
    public var repeatCustomers: Int
    public var purchases: BGNBDModel
    /// Nil when too few customers bought again with a positive value to fit spend.
    public var spend: GammaGammaModel?
    public var fittedAt: Date
    public var duration: Duration
    /// Why the spend model was not fitted, when this fit was just made (nil when read back from the table).
    public var spendProblem: String? = nil
}

/// Errors of the predictions module, each naming what is wrong.
public struct PredictionError: ReportedError, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Fits the customer-base models (BG/NBD for the number of repeat purchases, Gamma-Gamma for the value of a purchase;
/// Fader, Hardie & Lee 2005) on every profile's purchases and writes each buyer's predictive traits to
/// `cdp.profile_predictions`: probability alive, expected purchases and spend, predicted lifetime value.
///
/// One `GROUP BY` over the purchase events gives each profile's summary (repeat purchase days, first to last
/// purchase, first purchase to the end of the window, mean value of a repeat purchase day); the fit and the scores
/// are computed in Swift (PostgreSQL 15 has no `lgamma`) and the scores go back with `COPY`.
public struct CustomerBasePredictions: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Held while fitting or scoring, so two runs never interleave their writes.
    static let lock = AdvisoryLockKey(name: "tributary.predictions")

    /// The settings a fit starts from when none are given: the purchase event and revenue property of the RFM
    /// settings in force (the computed traits file), the defaults otherwise.
    public func defaultSettings() async throws -> CustomerBaseSettings {
        let computed = try await client.withConnection {
            try await ProfileConfig.load(ComputedTraitDefinitions.self, "computed_traits", $0)
        }
        let rfm = computed?.rfm ?? RFMSettings()
        return CustomerBaseSettings(purchaseEvent: rfm.event, revenueProperty: rfm.revenueProperty)
    }

    /// A profile's model inputs.
    struct Buyer {
        var profile: UUID
        var summary: CustomerSummary
    }

    /// Every buyer's summary from purchases before `end`, in the settings' time unit, and the first purchase's time.
    static func buyers(
        _ db: PostgresConnection, _ settings: CustomerBaseSettings, end: Date
    ) async throws -> (
        [Buyer], Date?
    ) {
        // Days are UTC days; the window's last day is the day of its last instant (the end is exclusive), and a
        // customer's age runs from the first purchase day to that day, as in the published summaries.
        let rows = try await db.query(
            """
            WITH purchase_days AS (
                SELECT e.profile_id, (e.timestamp AT TIME ZONE 'UTC')::date AS day, min(e.timestamp) AS first_at,
                       coalesce(sum(cdp.jsonb_float8(e.properties -> \(settings.revenueProperty))), 0) AS value
                FROM cdp.events AS e
                WHERE e.type = 'track' AND e.event = \(settings.purchaseEvent) AND e.profile_id IS NOT NULL
                  AND e.timestamp < \(end)
                GROUP BY e.profile_id, day
            )
            SELECT profile_id, (count(*) - 1)::int8, (max(day) - min(day))::int8,
                   ((\(end)::timestamptz - interval '1 microsecond') AT TIME ZONE 'UTC')::date - min(day),
                   CASE WHEN count(*) > 1
                        THEN ((sum(value) - (array_agg(value ORDER BY day))[1]) / (count(*) - 1))::float8 ELSE 0 END,
                   min(first_at)
            FROM purchase_days
            GROUP BY profile_id
            """)
        var buyers: [Buyer] = []
        buyers.reserveCapacity(rows.count)
        var first: Date?
        let unit = settings.timeUnitDays
        for row in rows {
            let (profile, frequency, recency, age, monetary, firstAt) = try row.decode(
                (UUID, Int, Int, Int, Double, Date).self)
            first = min(first ?? firstAt, firstAt)
            buyers.append(
                Buyer(
                    profile: profile,
                    summary: CustomerSummary(
                        frequency: Double(frequency), recency: Double(recency) / unit, age: Double(age) / unit,
                        monetaryValue: monetary)))
        }
        return (buyers, first)
    }

    /// Fits both models on purchases before `asOf`, stores the fit and scores every buyer with it (in one
    /// transaction: readers see the previous scores until it commits). `progress` hears each phase as it ends (for a
    /// terminal: a fit over millions of purchases takes a while).
    @discardableResult
    public func fit(
        _ settings: CustomerBaseSettings, asOf: Date = Date(), progress: (@Sendable (String) -> Void)? = nil
    ) async throws -> (
        fit: CustomerBaseFit, scored: Int
    ) {
        try settings.validate()
        return try await client.withTransaction { tx in
            try await tx.advisoryTransactionLock(Self.lock)
            return try await fit(tx, settings, asOf: asOf, progress: progress)
        }
    }

    func fit(
        _ tx: PostgresConnection, _ settings: CustomerBaseSettings, asOf: Date,
        progress: (@Sendable (String) -> Void)? = nil
    ) async throws -> (
        fit: CustomerBaseFit, scored: Int
    ) {
        let started = ContinuousClock.now
        let (buyers, first) = try await Self.buyers(tx, settings, end: asOf)
        let fetched = ContinuousClock.now - started
        progress?("read the purchases of \(buyers.count) buyers in \(fetched.milliseconds) ms; fitting")
        let summaries = buyers.map(\.summary)
        let purchases: BGNBDModel
        do {
            purchases = try BGNBDModel.fit(summaries)
        } catch let error as CustomerBaseError {
            throw PredictionError(
                "cannot fit the purchase model on \(buyers.count) buyers of '\(settings.purchaseEvent)' before "
                    + "\(PostgresTime.format(asOf)): \(error)")
        }
        var spend: GammaGammaModel?
        var spendProblem: String?
        do { spend = try GammaGammaModel.fit(summaries) } catch {
            spendProblem = "\(error)"
            logger.warning("predictions: spend model not fitted", metadata: ["reason": "\(error)"])
        }
        let duration = ContinuousClock.now - started
        let repeatCustomers = summaries.count { $0.frequency > 0 }
        let id = try await tx.query(
            """
            INSERT INTO cdp.prediction_fits (model, purchase_event, revenue_property, time_unit_days, window_start,
                window_end, customers, repeat_customers, r, alpha, a, b, log_likelihood, p, q, v, spend_log_likelihood,
                purchases_days, lifetime_days, annual_discount_rate, duration_ms)
            VALUES ('customer_base', \(settings.purchaseEvent), \(settings.revenueProperty), \(settings.timeUnitDays),
                \(first), \(asOf), \(buyers.count), \(repeatCustomers), \(purchases.r), \(purchases.alpha), \(purchases.a),
                \(purchases.b), \(purchases.logLikelihood), \(spend?.p), \(spend?.q), \(spend?.v), \(spend?.logLikelihood),
                \(settings.purchasesDays), \(settings.lifetimeDays), \(settings.annualDiscountRate), \(Double(duration.milliseconds)))
            RETURNING fit_id
            """
        ).scalar(Int64.self)
        let fit = CustomerBaseFit(
            id: id, settings: settings, windowStart: first, windowEnd: asOf, customers: buyers.count,
            repeatCustomers: repeatCustomers, purchases: purchases, spend: spend, fittedAt: Date(), duration: duration,
            spendProblem: spendProblem)
        progress?(
            "fitted in \((duration - fetched).milliseconds) ms (log-likelihood \(purchases.logLikelihood)); scoring \(buyers.count) buyers"
        )
        let scored = try await Self.write(tx, fit: fit, buyers: buyers, scoredAt: asOf)
        logger.info(
            "predictions: fitted and scored",
            metadata: [
                "fit": "\(id)", "buyers": "\(buyers.count)", "repeat_buyers": "\(repeatCustomers)",
                "fetch_ms": "\(fetched.milliseconds)", "fit_ms": "\((duration - fetched).milliseconds)",
                "total_ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
        return (fit, scored)
    }

    /// Scores every buyer again with a stored fit (the latest if `fitID` is nil) on purchases before `asOf`: new
    /// buyers get scores, everyone's inputs move on, the parameters stay.
    @discardableResult
    public func score(asOf: Date = Date(), fitID: Int64? = nil) async throws -> (fit: CustomerBaseFit, scored: Int) {
        try await client.withTransaction { tx in
            try await tx.advisoryTransactionLock(Self.lock)
            guard let fit = try await Self.fit(tx, id: fitID) else {
                throw PredictionError(
                    fitID.map { "no fit \($0) in cdp.prediction_fits" }
                        ?? "nothing to score with: no fit yet (run `tributary predictions fit` first)")
            }
            return (fit, try await Self.score(tx, fit: fit, asOf: asOf))
        }
    }

    static func score(_ tx: PostgresConnection, fit: CustomerBaseFit, asOf: Date) async throws -> Int {
        let (buyers, _) = try await buyers(tx, fit.settings, end: asOf)
        return try await write(tx, fit: fit, buyers: buyers, scoredAt: asOf)
    }

    /// What a scheduled look did.
    public enum ScheduledRun: Sendable, Equatable {
        /// Nothing was due (or no fit exists yet, or another process was at it).
        case nothing
        /// The latest fit scored every buyer again (rows written).
        case rescored(Int)
        /// The models were fitted again with the latest fit's settings (the new fit, rows written).
        case refitted(Int64, Int)
    }

    /// The worker's schedule: once someone has fitted the models, they are fitted again with the same settings when
    /// the latest fit's data ends `refitEvery` before `now`, and every buyer is scored again when the scores are as of
    /// `rescoreEvery` before `now` (or there are none).
    /// Any number of processes may call it: one does the work, the others find it busy or already done.
    public func runIfDue(
        now: Date = Date(), refitEvery: Duration = .seconds(7 * 86_400), rescoreEvery: Duration = .seconds(86_400)
    ) async throws -> ScheduledRun {
        func seconds(_ duration: Duration) -> Double { Double(duration.milliseconds) / 1000 }
        return try await client.withTransaction { tx in
            guard try await tx.query("SELECT pg_try_advisory_xact_lock(\(Self.lock.value))").scalar(Bool.self),
                let latest = try await Self.fit(tx, id: nil)
            else { return .nothing }
            if now.timeIntervalSince(latest.windowEnd) >= seconds(refitEvery) {
                let (fit, scored) = try await fit(tx, latest.settings, asOf: now)
                return .refitted(fit.id, scored)
            }
            let scoredAt = try await tx.query("SELECT max(scored_at) FROM cdp.profile_predictions").scalar(Date?.self)
            if scoredAt.map({ now.timeIntervalSince($0) >= seconds(rescoreEvery) }) ?? true {
                return .rescored(try await Self.score(tx, fit: latest, asOf: now))
            }
            return .nothing
        }
    }

    /// The stored fit `id` (the latest if nil); nil if there is none.
    public func storedFit(id: Int64? = nil) async throws -> CustomerBaseFit? {
        try await client.withConnection { try await Self.fit($0, id: id) }
    }

    static func fit(_ db: PostgresConnection, id: Int64?) async throws -> CustomerBaseFit? {
        let filter: PostgresQuery = id.map { "WHERE fit_id = \($0)" } ?? ""
        guard
            let row = try await db.query(
                """
                SELECT fit_id, purchase_event, revenue_property, time_unit_days, window_start, window_end, customers,
                       repeat_customers, r, alpha, a, b, log_likelihood, p, q, v, spend_log_likelihood, purchases_days,
                       lifetime_days, annual_discount_rate, fitted_at, duration_ms
                FROM cdp.prediction_fits \(filter) ORDER BY fit_id DESC LIMIT 1
                """
            ).first
        else { return nil }
        func cell<T: PostgresDecodable>(_ index: Int, _ type: T.Type = T.self) throws -> T { try row[index].decode(T.self) }
        let (r, alpha, a, b, likelihood) = (
            try cell(8, Double.self), try cell(9, Double.self), try cell(10, Double.self), try cell(11, Double.self),
            try cell(12, Double.self)
        )
        let (p, q, v, spendLikelihood) = (
            try cell(13, Double?.self), try cell(14, Double?.self), try cell(15, Double?.self), try cell(16, Double?.self)
        )
        let repeatCustomers = try cell(7, Int.self)
        var spend: GammaGammaModel?
        if let p, let q, let v {
            spend = GammaGammaModel(p: p, q: q, v: v, logLikelihood: spendLikelihood ?? .nan, customers: repeatCustomers)
        }
        return CustomerBaseFit(
            id: try cell(0),
            settings: CustomerBaseSettings(
                purchaseEvent: try cell(1), revenueProperty: try cell(2), timeUnitDays: try cell(3),
                purchasesDays: try cell(17), lifetimeDays: try cell(18), annualDiscountRate: try cell(19)),
            windowStart: try cell(4), windowEnd: try cell(5), customers: try cell(6), repeatCustomers: repeatCustomers,
            purchases: BGNBDModel(r: r, alpha: alpha, a: a, b: b, logLikelihood: likelihood, customers: try cell(6)),
            spend: spend, fittedAt: try cell(20), duration: .milliseconds(try cell(21, Double.self)))
    }

    /// Replaces every row of `cdp.profile_predictions` by the buyers' scores under `fit`; returns the rows written.
    static func write(_ tx: PostgresConnection, fit: CustomerBaseFit, buyers: [Buyer], scoredAt: Date) async throws -> Int {
        let settings = fit.settings
        let purchasesHorizon = Double(settings.purchasesDays) / settings.timeUnitDays
        let lifetimeHorizon = Double(settings.lifetimeDays) / settings.timeUnitDays
        // The discount rate per time unit, from the annual rate. Undiscounted, the value is the expected purchases over
        // the whole horizon times the expected spend: one step instead of one per time unit.
        let discount = pow(1 + settings.annualDiscountRate, settings.timeUnitDays / 365.25) - 1
        // Discounted spend is summed month by month (as `lifetimes` does); undiscounted, one step gives the same value.
        let steps = discount == 0 ? 1 : max(1, Int((Double(settings.lifetimeDays) / 30.44).rounded(.up)))
        let scoredAtText = PostgresTime.format(scoredAt)
        // The scores are computed on every core, a chunk of buyers each, as COPY text; then sent in order.
        func lines(_ range: Range<Int>) -> String {
            var text = ""
            text.reserveCapacity(range.count * 160)
            for buyer in buyers[range] {
                let c = buyer.summary
                let alive = fit.purchases.probabilityAlive(c)
                let expected = fit.purchases.expectedPurchases(c, within: purchasesHorizon)
                let spend = fit.spend?.expectedAverageSpend(c)
                let value = fit.spend.map {
                    predictedLifetimeValue(
                        bgnbd: fit.purchases, gammaGamma: $0, customer: c, horizon: lifetimeHorizon,
                        discountRatePerPeriod: discount, periods: steps)
                }
                text += buyer.profile.uuidString
                text += "\t\(fit.id)\t\(Int(c.frequency))\t"
                text += [c.recency, c.age, c.monetaryValue, alive, expected].map(Self.copyNumber).joined(separator: "\t")
                text += "\t\(Self.copyNumber(spend))\t\(Self.copyNumber(value))\t\(scoredAtText)\n"
            }
            return text
        }
        let chunk = 20_000
        let chunks = await withTaskGroup(of: (Int, String).self) { group in
            var next = 0
            var done: [Int: String] = [:]
            let parallel = max(1, ProcessInfo.processInfo.activeProcessorCount)
            func add() {
                guard next * chunk < buyers.count else { return }
                let index = next
                group.addTask { (index, lines(index * chunk..<min(buyers.count, (index + 1) * chunk))) }
                next += 1
            }
            for _ in 0..<parallel { add() }
            while let (index, text) = await group.next() {
                done[index] = text
                add()
            }
            return done.sorted { $0.key < $1.key }.map(\.value)
        }
        try await tx.execute("DELETE FROM cdp.profile_predictions")
        return try await tx.copyIn(
            """
            COPY cdp.profile_predictions (profile_id, fit_id, frequency, recency, age, monetary_value, probability_alive,
                expected_purchases, expected_spend, predicted_lifetime_value, scored_at) FROM STDIN
            """
        ) { writer in
            for text in chunks { try await writer.write(text) }
        }
    }

    /// A double in COPY text format; `\N` (NULL) for nil or a non-finite value.
    static func copyNumber(_ value: Double?) -> String {
        guard let value, value.isFinite else { return "\\N" }
        return "\(value)"
    }
}
