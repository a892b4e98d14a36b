// tributary-predictions-bench: the customer-base models (issue: predictive traits).
//
//   swift build -c release --product tributary-predictions-bench && .build/release/tributary-predictions-bench
//
// 1. CDNOW (the `lifetimes` 0.11.3 wheel's data, downloaded on first use): the published calibration/holdout split
//    (purchases up to 1997-09-30, weeks; holdout the next 39 weeks) on the 2,357-customer sample and the
//    23,570-customer master file: parameters, fit time (median of 5), predicted vs actual holdout purchases,
//    per-customer MAE against the naive rate forecast x/T·39, the top decile's share of actual holdout purchases.
// 2. The database: the multi-channel people data set (SyntheticPeople, 300k people, about 1.1M events) ingested and
//    resolved by the identity stage (or a copy of --template), then `predictions fit` and `predictions score` as the
//    command line runs them (the GROUP BY over purchases, the fit, COPY of every buyer's scores), three times each.
// 3. Scale: --scale-buyers profiles (300,000) that each bought 1–7 times over two years (purchase events written
//    straight into cdp.events with their profile_id, each customer with a purchase rhythm and a spend level of their
//    own), then `predictions fit` and `predictions score` three times each: the target is scoring 300,000
//    profiles in ≤ 10 s.
// 4. Recommendations: --recommendation-profiles profiles (300,000) browsing and buying 2,000 products in 40
//    categories (each profile prefers one to three categories) over 120 days, written straight into cdp.events; the
//    recommendations as of 14 days before the end are checked against what each profile bought in those 14 days
//    (hit rate @10, against the popular products as the baseline); then computed as of the end, three times.
import ArgumentParser
import BenchmarkSupport
import Foundation
import Logging
import Postgres
import TributaryFixtures
import TributaryIdentity
import TributaryModel
import TributaryPredictions
import TributaryService

@main
struct PredictionsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tributary-predictions-bench")

    @Option(help: "People to generate (about 3.7 events each).") var people = 300_000
    @Option(help: "Copy this database (events ingested and resolved) instead of generating one.") var template: String?
    @Option(help: "Embedded data directory used when DATABASE_URL/PG* are unset.") var dataDir = ".tributary/bench-pgdata"
    @Flag(help: "Only the CDNOW part.") var cdnowOnly = false
    @Flag(help: "Leave out the people data set (phase 2).") var skipPeople = false
    @Option(help: "Buyers of the scale phase (0: skip it).") var scaleBuyers = 300_000
    @Option(help: "Profiles of the recommendations phase (0: skip it).") var recommendationProfiles = 300_000

    func run() async throws {
        for file in ["CDNOW_sample.txt", "CDNOW_master.txt"] {
            try evaluate(name: file, purchases: try CDNOWData.transactions(file))
        }
        if cdnowOnly { return }
        if !skipPeople { try await database() }
        if scaleBuyers > 0 { try await scale() }
        if recommendationProfiles > 0 { try await recommendations() }
    }

    /// A fresh migrated database `name` with event partitions from `monthsBack` months ago, for data written straight
    /// into `cdp.events`.
    func scratchDatabase(_ name: String, monthsBack: Int) async throws -> (PostgresClient, Logger) {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let server = try await DatabaseTarget.resolve(dataDirectory: dataDir, logger: logger).configuration
        let configuration = try await freshDatabase(name, on: server, files: try ProjectFiles.locate(), logger: logger)
        let client = PostgresClient(configuration: configuration, options: .init(maxConnections: 4), logger: logger)
        try await client.execute("SELECT count(*) FROM cdp.ensure_event_partitions(\(Int32(monthsBack)), 1)")
        return (client, logger)
    }

    /// Hit rate @10 on a time split, and the time to compute every profile's recommendations.
    func recommendations() async throws {
        let (client, logger) = try await scratchDatabase("tributary_predictions_recommend", monthsBack: 5)
        var clock = ContinuousClock.now
        // Product p belongs to category p % 40; profile c prefers categories c % 40 and (c * 7) % 40 (one in three
        // also (c * 13) % 40), and within a category some products are far more popular (p / 40 small). Nine
        // interactions in ten are in a preferred category; one in five is a purchase.
        try await client.execute(
            """
            INSERT INTO cdp.events (seq, message_id, source_id, type, event, profile_id, timestamp, received_at, properties)
            SELECT nextval('cdp.events_seq'), 'rec-' || c || '-' || k, 'bench', 'track',
                   CASE WHEN random() < 0.2 THEN 'Order Completed' ELSE 'Product Viewed' END, md5('rec-' || c)::uuid,
                   now() - make_interval(secs => (random() * 120 * 86400)::int), now(),
                   jsonb_build_object('product_id', 'sku-' || (category + 40 * floor(50 * random() * random())::int))
            FROM generate_series(1, \(recommendationProfiles)) AS c
            CROSS JOIN LATERAL generate_series(1, 4 + (random() * 16)::int + c * 0) AS k
            CROSS JOIN LATERAL (
                SELECT CASE WHEN random() < 0.1 THEN (random() * 39)::int
                            ELSE (ARRAY[c % 40, (c * 7) % 40, CASE WHEN c % 3 = 0 THEN (c * 13) % 40 ELSE c % 40 END])
                                 [1 + (random() * 2.999)::int + k * 0]
                       END AS category
            ) AS pick
            """)
        try await client.execute("ANALYZE cdp.events")
        let (events, profiles) = try await client.query(
            "SELECT count(*), count(DISTINCT profile_id) FROM cdp.events"
        ).first!.decode((Int, Int).self)
        say("recommendations: \(events) events of \(profiles) profiles written in \(seconds(since: clock)) s")
        let end = try await client.query("SELECT max(timestamp) + interval '1 second' FROM cdp.events").scalar(Date.self)
        let split = end.addingTimeInterval(-14 * 86_400)
        let recommender = Recommendations(client: client, logger: logger)
        clock = .now
        let before = try await recommender.compute(asOf: split)
        say(
            "as of 14 days before the end: \(before.rows) recommendations for \(before.profiles) profiles "
                + "(\(before.products) products, \(before.pairs) pairs) in \(seconds(since: clock)) s")
        // A hit: a product bought in the last 14 days (not bought before) is among the profile's top 10.
        let (buyers, hits, popularHits) = try await client.query(
            """
            WITH later AS (
                SELECT DISTINCT e.profile_id, e.properties ->> 'product_id' AS product
                FROM cdp.events AS e
                WHERE e.event = 'Order Completed' AND e.timestamp >= \(split)
                  AND NOT EXISTS (SELECT 1 FROM cdp.events AS b WHERE b.profile_id = e.profile_id AND b.event = 'Order Completed'
                                  AND b.timestamp < \(split) AND b.properties ->> 'product_id' = e.properties ->> 'product_id')
            )
            SELECT count(DISTINCT l.profile_id),
                   count(DISTINCT l.profile_id) FILTER (WHERE EXISTS (
                       SELECT 1 FROM cdp.profile_recommendations AS r
                       WHERE r.profile_id = l.profile_id AND r.product_id = l.product AND r.rank <= 10)),
                   count(DISTINCT l.profile_id) FILTER (WHERE EXISTS (
                       SELECT 1 FROM cdp.popular_products AS p WHERE p.product_id = l.product AND p.rank <= 10))
            FROM later AS l
            """
        ).first!.decode((Int, Int, Int).self)
        say(
            String(
                format:
                    "hit rate @10 (a new purchase of the next 14 days among the top 10): %.3f (%d of %d buyers); popular top 10: %.3f (%.2fx)",
                Double(hits) / Double(max(buyers, 1)), hits, buyers, Double(popularHits) / Double(max(buyers, 1)),
                Double(hits) / Double(max(popularHits, 1))))
        for run in 1...3 {
            clock = .now
            let report = try await recommender.compute(asOf: end)
            say(
                "recommendations run \(run): \(seconds(since: clock)) s for \(report.profiles) profiles "
                    + "(\(report.rows) rows, \(report.products) products, \(report.pairs) pairs)")
        }
        await client.shutdown()
    }

    /// Fit and score on `scaleBuyers` buyers with purchase histories of their own.
    func scale() async throws {
        let (client, logger) = try await scratchDatabase("tributary_predictions_scale", monthsBack: 25)
        var clock = ContinuousClock.now
        // Customer p first bought `first` days ago and again every `gap` days (± a few), 1–7 times, spending around a
        // level of their own.
        try await client.execute(
            """
            INSERT INTO cdp.events (seq, message_id, source_id, type, event, profile_id, timestamp, received_at, properties)
            SELECT nextval('cdp.events_seq'), 'scale-' || c.p || '-' || k, 'bench', 'track', 'Order Completed', c.profile,
                   now() - make_interval(days => c.first - (k - 1) * c.gap, secs => (random() * 86000)::int), now(),
                   jsonb_build_object('revenue', round((c.level * (0.6 + 0.8 * random()))::numeric, 2))
            FROM (SELECT p, md5('profile-' || p)::uuid AS profile, 30 + (random() * 700)::int AS first,
                         3 + (random() * 90)::int AS gap, 1 + (random() * 6)::int AS purchases,
                         5 + 200 * random() * random() AS level
                  FROM generate_series(1, \(scaleBuyers)) AS p) AS c
            CROSS JOIN LATERAL generate_series(1, c.purchases) AS k
            WHERE c.first - (k - 1) * c.gap > 0
            """)
        try await client.execute("ANALYZE cdp.events")
        let (purchases, buyers) = try await client.query(
            "SELECT count(*), count(DISTINCT profile_id) FROM cdp.events"
        ).first!.decode((Int, Int).self)
        say("scale: \(purchases) purchases of \(buyers) buyers written in \(seconds(since: clock)) s")
        let predictions = CustomerBasePredictions(client: client, logger: logger)
        for run in 1...3 {
            clock = .now
            let (fit, scored) = try await predictions.fit(CustomerBaseSettings(annualDiscountRate: 0.1))
            let fitSeconds = elapsed(since: clock)
            clock = .now
            let (_, rescored) = try await predictions.score()
            say(
                String(
                    format:
                        "scale run %d: fit + score %.2f s (%d buyers, %d repeat; r %.3f alpha %.2f a %.3f b %.3f); score alone %.2f s (%d rows)",
                    run, fitSeconds, scored, fit.repeatCustomers, fit.purchases.r, fit.purchases.alpha, fit.purchases.a,
                    fit.purchases.b, elapsed(since: clock), rescored) + "; spend " + spendSummary(fit))
        }
        try await propensity(client, logger: logger)
        await client.shutdown()
    }

    /// The calibration/holdout check on one CDNOW transaction log.
    func evaluate(name: String, purchases: [(customer: String, day: Int, value: Double)]) throws {
        let calibrationEnd = CustomerSummary.dayNumber(year: 1997, month: 9, day: 30)
        let holdoutWeeks = 39.0
        let holdoutEnd = calibrationEnd + Int(holdoutWeeks * 7)
        let summaries = CustomerSummary.summaries(transactions: purchases, calibrationEndDay: calibrationEnd, daysPerUnit: 7)
        var holdoutDays: [String: Set<Int>] = [:]
        for purchase in purchases where purchase.day > calibrationEnd && purchase.day <= holdoutEnd {
            holdoutDays[purchase.customer, default: []].insert(purchase.day)
        }
        let customers = summaries.keys.sorted()
        let rows = customers.map { summaries[$0]! }
        var fitTimes: [Double] = []
        var bgnbd = try BGNBDModel.fit(rows)
        for _ in 0..<5 {
            let clock = ContinuousClock.now
            bgnbd = try BGNBDModel.fit(rows)
            fitTimes.append(elapsed(since: clock))
        }
        var clock = ContinuousClock.now
        let spend = try GammaGammaModel.fit(rows)
        let spendTime = elapsed(since: clock)
        var predicted = 0.0, actual = 0.0, modelError = 0.0, naiveError = 0.0
        var scored: [(expected: Double, actual: Double)] = []
        clock = .now
        for (customer, summary) in zip(customers, rows) {
            let expected = bgnbd.expectedPurchases(summary, within: holdoutWeeks)
            let bought = Double(holdoutDays[customer]?.count ?? 0)
            let naive = summary.age > 0 ? summary.frequency / summary.age * holdoutWeeks : 0
            predicted += expected
            actual += bought
            modelError += abs(expected - bought)
            naiveError += abs(naive - bought)
            scored.append((expected, bought))
        }
        let scoreTime = elapsed(since: clock)
        scored.sort { $0.expected > $1.expected }
        let decile = (scored.count + 9) / 10
        let topDecile = scored.prefix(decile).reduce(0.0) { $0 + $1.actual }
        let n = Double(rows.count)
        say(
            "CDNOW \(name): \(purchases.count) purchases, \(rows.count) customers, \(rows.count { $0.frequency > 0 }) repeat buyers"
        )
        say(
            String(
                format: "  BG/NBD r %.4f, alpha %.4f, a %.4f, b %.4f, LL %.2f; fit %.1f ms (median of 5)", bgnbd.r,
                bgnbd.alpha, bgnbd.a, bgnbd.b, bgnbd.logLikelihood, fitTimes.sorted()[2] * 1000))
        say(
            String(
                format: "  Gamma-Gamma p %.3f, q %.3f, v %.3f (%d repeat buyers); fit %.1f ms", spend.p, spend.q, spend.v,
                spend.customers, spendTime * 1000))
        say(
            String(
                format:
                    "  holdout 39 weeks: predicted %.1f vs actual %.0f repeat purchases (%+.1f%%); per-customer MAE %.3f vs naive %.3f (%.2fx); top decile %.1f%% of actual; scoring %.1f ms",
                predicted, actual, (predicted / actual - 1) * 100, modelError / n, naiveError / n,
                modelError / naiveError, topDecile / actual * 100, scoreTime * 1000))
    }

    /// `predictions fit` and `predictions score` on the people data set.
    func database() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let server = try await DatabaseTarget.resolve(dataDirectory: dataDir, logger: logger).configuration
        let files = try ProjectFiles.locate()
        var clock = ContinuousClock.now
        let configuration = try await freshDatabase(
            "tributary_predictions_bench", on: server, files: files, logger: logger, template: template)
        if let template { say("database: copied \(template) in \(seconds(since: clock)) s") }
        let client = PostgresClient(configuration: configuration, options: .init(maxConnections: 4), logger: logger)
        let version = try await client.query("SHOW server_version").scalar(String.self)
        if template == nil {
            clock = .now
            let data = SyntheticPeople.generate(SyntheticPeople.Options(people: people, seed: 42))
            try await ingest(data.events, into: client, writeSize: 2000, logger: logger)
            _ = try await IdentityStage(client: client, logger: logger).catchUp()
            say("prepared: \(data.events.count) events ingested and resolved in \(seconds(since: clock)) s")
        }
        try await client.execute("VACUUM ANALYZE")
        let (events, profiles, purchases) = try await client.query(
            """
            SELECT (SELECT count(*) FROM cdp.events), (SELECT count(*) FROM cdp.identity_profiles),
                   (SELECT count(*) FROM cdp.events WHERE event = 'Order Completed')
            """
        ).first!.decode((Int, Int, Int).self)
        say(
            "server: PostgreSQL \(version); \(ProcessInfo.processInfo.activeProcessorCount) cores; \(events) events, "
                + "\(profiles) profiles, \(purchases) purchases")
        let predictions = CustomerBasePredictions(client: client, logger: logger)
        let asOf = try await client.query("SELECT max(timestamp) + interval '1 day' FROM cdp.events").scalar(Date.self)
        for discount in [0.0, 0.1] {
            for run in 1...3 {
                clock = .now
                let settings = CustomerBaseSettings(annualDiscountRate: discount)
                let (fit, scored) = try await predictions.fit(settings, asOf: asOf)
                let fitSeconds = elapsed(since: clock)
                clock = .now
                let (_, rescored) = try await predictions.score(asOf: asOf)
                say(
                    String(
                        format:
                            "fit (discount %.0f%%) run %d: %.2f s for %d buyers (%d repeat; BG/NBD r %.3f alpha %.2f a %.3f b %.3f); score %.2f s (%d rows)",
                        discount * 100, run, fitSeconds, scored, fit.repeatCustomers, fit.purchases.r, fit.purchases.alpha,
                        fit.purchases.a, fit.purchases.b, elapsed(since: clock), rescored) + "; spend " + spendSummary(fit))
            }
        }
        try await propensity(client, logger: logger)
        await client.shutdown()
    }

    /// A propensity of purchases within 30 days, trained as of the newest purchase, three times.
    func propensity(_ client: PostgresClient, logger: Logger) async throws {
        var clock = ContinuousClock.now
        let newest = try await client.query(
            "SELECT max(timestamp) + interval '1 second' FROM cdp.events WHERE event = 'Order Completed'"
        ).scalar(Date.self)
        let propensities = PropensityScores(client: client, logger: logger)
        for run in 1...3 {
            clock = .now
            do {
                let (model, scored) = try await propensities.train(
                    PropensitySettings(name: "purchase_30d", kind: .goal, goalEvent: "Order Completed", windowDays: 30),
                    asOf: newest)
                let trainSeconds = elapsed(since: clock)
                clock = .now
                let (_, rescored) = try await propensities.score("purchase_30d", asOf: newest)
                say(
                    String(
                        format:
                            "propensity purchase_30d run %d: train + validate + score %.2f s (%d training examples, %d positive; AUC %.3f, log loss %.4f, lift %.2fx); score alone %.2f s (%d profiles)",
                        run, trainSeconds, model.trainingExamples, model.trainingPositives, model.auc, model.logLoss,
                        model.liftTopDecile ?? .nan, elapsed(since: clock), rescored))
            } catch let error as PredictionError {
                say("propensity purchase_30d run \(run): refused after \(seconds(since: clock)) s: \(error)")
            }
        }
    }
}

/// The spend model's parameters, or why it was not fitted.
func spendSummary(_ fit: CustomerBaseFit) -> String {
    guard let spend = fit.spend else { return "not fitted: " + (fit.spendProblem ?? "?") }
    return String(format: "p %.3f q %.3f v %.3f", spend.p, spend.q, spend.v)
}
