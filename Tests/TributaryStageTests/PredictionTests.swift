import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryFixtures
@testable import TributaryGovernance
@testable import TributaryIdentity
@testable import TributaryModel
@testable import TributaryPredictions

/// The customer-base predictions on real PostgreSQL: the summaries the SQL computes against ones computed here from the
/// generated purchases, the scores against the model's functions, and what a refit, a rescore and a deletion leave.
@Suite struct PredictionTests {
    typealias F = ProfileFixture

    /// One generated purchase.
    struct Purchase {
        var user: String
        var at: Date
        var revenue: Double?
    }

    /// Buyers who each buy at their own rate (some daily, most every few weeks) and may stop for good after any purchase,
    /// over `weeks` weeks; a third of the users only browse. Some purchases share a day, some lack a revenue.
    static func generate(seed: UInt64, users: Int, weeks: Int) -> (purchases: [Purchase], browsers: [String]) {
        var random = SeededRandom(seed: seed)
        var purchases: [Purchase] = []
        var browsers: [String] = []
        let end = Double(weeks) * 7
        for user in 0..<users {
            if random.chance(0.33) {
                browsers.append("u\(user)")
                continue
            }
            let meanGap = Double(1 + random.below(60))  // days between purchases while active
            let dropout = Double(random.below(40)) / 100
            var day = Double(random.below(weeks * 7 - 1))
            while day < end {
                let revenue: Double? = random.chance(0.9) ? Double(500 + random.below(20_000)) / 100 : nil
                purchases.append(Purchase(user: "u\(user)", at: F.day(day + Double(random.below(20)) / 24), revenue: revenue))
                if random.chance(dropout) { break }
                day += Double(1 + random.below(Int(2 * meanGap)))
            }
        }
        return (purchases, browsers)
    }

    /// The model's inputs for each user, computed here: UTC purchase days before `end`, in weeks.
    static func summaries(_ purchases: [Purchase], end: Date) -> [String: CustomerSummary] {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        func dayNumber(_ date: Date) -> Int { Int((calendar.startOfDay(for: date).timeIntervalSince1970 / 86_400).rounded()) }
        let lastDay = dayNumber(end.addingTimeInterval(-0.000_001))
        var result: [String: CustomerSummary] = [:]
        for (user, bought) in Dictionary(grouping: purchases.filter { $0.at < end }, by: \.user) {
            var days: [Int: Double] = [:]
            for purchase in bought { days[dayNumber(purchase.at), default: 0] += purchase.revenue ?? 0 }
            let sorted = days.keys.sorted()
            let repeats = sorted.dropFirst().map { days[$0]! }
            result[user] = CustomerSummary(
                frequency: Double(sorted.count - 1), recency: Double(sorted.last! - sorted.first!) / 7,
                age: Double(lastDay - sorted.first!) / 7,
                monetaryValue: repeats.isEmpty ? 0 : repeats.reduce(0, +) / Double(repeats.count))
        }
        return result
    }

    static func incoming(_ purchase: Purchase) -> IncomingEvent {
        let revenue = purchase.revenue.map { "\($0)" } ?? #""unknown""#
        return F.event(
            .track, user: purchase.user, event: "Order Completed", properties: #"{"revenue": \#(revenue)}"#, at: purchase.at)
    }

    /// A stored row of `cdp.profile_predictions`.
    struct Stored {
        var fit: Int64
        var summary: CustomerSummary
        var alive: Double
        var expected: Double
        var spend: Double?
        var lifetimeValue: Double?
    }

    /// The stored scores by user id.
    static func stored(_ client: PostgresClient) async throws -> [String: Stored] {
        var result: [String: Stored] = [:]
        let rows = try await client.query(
            """
            SELECT n.value, x.fit_id, x.frequency, x.recency, x.age, x.monetary_value, x.probability_alive,
                   x.expected_purchases, x.expected_spend, x.predicted_lifetime_value
            FROM cdp.profile_predictions AS x JOIN cdp.identity_nodes AS n ON n.profile_id = x.profile_id AND n.kind = 'user_id'
            """)
        for row in rows {
            let (user, fit, frequency, recency, age, monetary, alive, expected, spend, value) = try row.decode(
                (String, Int64, Int, Double, Double, Double, Double, Double, Double?, Double?).self)
            result[user] = Stored(
                fit: fit,
                summary: CustomerSummary(frequency: Double(frequency), recency: recency, age: age, monetaryValue: monetary),
                alive: alive, expected: expected, spend: spend, lifetimeValue: value)
        }
        return result
    }

    static func close(_ a: Double, _ b: Double, _ tolerance: Double = 1e-9) -> Bool {
        abs(a - b) <= tolerance * max(1, abs(a), abs(b))
    }

    static func close(_ a: CustomerSummary, _ b: CustomerSummary) -> Bool {
        a.frequency == b.frequency && close(a.recency, b.recency) && close(a.age, b.age)
            && close(a.monetaryValue, b.monetaryValue, 1e-6)
    }

    @Test func fitScoresEveryBuyerFromTheirPurchases() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let weeks = 52
            let (purchases, browsers) = Self.generate(seed: 7, users: 400, weeks: weeks)
            let end = F.day(Double(weeks) * 7 - 10)  // purchases after the end must not count
            var events = purchases.map(Self.incoming)
            events += browsers.map { F.event(.track, user: $0, event: "Product Viewed", at: F.day(3)) }
            try await IdentityFixture.write(events, client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()

            let predictions = CustomerBasePredictions(client: client, logger: TestDatabase.logger)
            let settings = try await predictions.defaultSettings()
            #expect(settings == CustomerBaseSettings(purchaseEvent: "Order Completed", revenueProperty: "revenue"))
            let (fit, scored) = try await predictions.fit(settings, asOf: end)
            let expected = Self.summaries(purchases, end: end)
            #expect(fit.customers == expected.count && scored == expected.count)
            #expect(fit.repeatCustomers == expected.values.count { $0.frequency > 0 })
            let spendModel = try #require(fit.spend, "enough repeat buyers with revenue to fit spend")
            // The stored fit reads back as it was fitted, and is the model's maximum-likelihood fit of these summaries.
            let read = try #require(try await predictions.storedFit())
            #expect(read.id == fit.id && read.settings == fit.settings && read.purchases == fit.purchases)
            #expect(read.spend?.p == spendModel.p && read.spend?.q == spendModel.q && read.spend?.v == spendModel.v)
            #expect(read.windowEnd == end && read.customers == fit.customers && read.repeatCustomers == fit.repeatCustomers)
            let refit = try BGNBDModel.fit(Array(expected.values))
            #expect(Self.close(refit.r, fit.purchases.r, 1e-6) && Self.close(refit.b, fit.purchases.b, 1e-6))

            let stored = try await Self.stored(client)
            #expect(Set(stored.keys) == Set(expected.keys), "every buyer and nobody else (browsers: \(browsers.count))")
            for (user, row) in stored {
                let summary = expected[user]!
                #expect(Self.close(row.summary, summary), "\(user): stored \(row.summary), computed here \(summary)")
                #expect(row.fit == fit.id)
                #expect(Self.close(row.alive, fit.purchases.probabilityAlive(summary)))
                #expect(row.alive > 0 && row.alive <= 1 && (summary.frequency > 0 || row.alive == 1))
                #expect(Self.close(row.expected, fit.purchases.expectedPurchases(summary, within: 90.0 / 7)))
                #expect(Self.close(row.spend ?? .nan, spendModel.expectedAverageSpend(summary)))
                let value = predictedLifetimeValue(
                    bgnbd: fit.purchases, gammaGamma: spendModel, customer: summary, horizon: 365.0 / 7,
                    discountRatePerPeriod: 0)
                #expect(Self.close(row.lifetimeValue ?? .nan, value))
            }
            // Among repeat buyers, one who bought often and recently is expected to buy more than one long gone.
            let repeaters = stored.values.filter { $0.summary.frequency >= 2 }
            let recent = try #require(repeaters.max { $0.summary.recency / $0.summary.age < $1.summary.recency / $1.summary.age })
            let gone = try #require(repeaters.min { $0.summary.recency / $0.summary.age < $1.summary.recency / $1.summary.age })
            #expect(recent.alive > gone.alive)

            // A new buyer after the fit: scoring again adds them with the same parameters; the fit stays the latest.
            let late = Purchase(user: "late", at: end.addingTimeInterval(86_400 * 20), revenue: 12.5)
            try await IdentityFixture.write([Self.incoming(late)], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            let later = end.addingTimeInterval(86_400 * 30)
            let (used, rescored) = try await predictions.score(asOf: later)
            #expect(used.id == fit.id && used.purchases == fit.purchases)
            let afterScore = try await Self.stored(client)
            #expect(rescored == Self.summaries(purchases + [late], end: later).count && afterScore.count == rescored)
            #expect(afterScore["late"]?.summary == CustomerSummary(frequency: 0, recency: 0, age: 10.0 / 7, monetaryValue: 0))
            #expect(try await client.query("SELECT count(*) FROM cdp.prediction_fits").scalar(Int.self) == 1)

            // The worker's schedule: the fit's data is 30 days old, so it is fitted again; then nothing is due until
            // the scores are a day old.
            let refitted = try await predictions.runIfDue(now: later.addingTimeInterval(3600))
            let fits = try await client.query("SELECT fit_id FROM cdp.prediction_fits ORDER BY fit_id").map {
                try $0.decode(Int64.self)
            }
            #expect(fits.count == 2 && refitted == .refitted(fits[1], rescored))
            #expect(try await predictions.runIfDue(now: later.addingTimeInterval(7200)) == .nothing)
            #expect(try await predictions.runIfDue(now: later.addingTimeInterval(3600 + 86_400)) == .rescored(rescored))
            #expect(try await Self.stored(client).values.allSatisfy { $0.fit == fits[1] })

            // A deletion takes the person's predictions with it, and an export shows them first.
            let privacy = PrivacyRequests(client: client, logger: TestDatabase.logger)
            let export = try await privacy.export(identifier: "user_id:late", actor: .cli)
            #expect(export.contains(#""predictions""#) && export.contains(#""probability_alive""#))
            _ = try await privacy.delete(identifier: "user_id:late", actor: .cli, registry: DestinationRegistry())
            #expect(try await Self.stored(client)["late"] == nil)
            #expect(try await client.query("SELECT count(*) FROM cdp.profile_predictions").scalar(Int.self) == rescored - 1)
        }
    }

    @Test func badSettingsNoDataAndNoFitAreRefusedWithoutTouchingScores() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let predictions = CustomerBasePredictions(client: client, logger: TestDatabase.logger)
            await #expect(throws: PredictionError("nothing to score with: no fit yet (run `tributary predictions fit` first)")) {
                try await predictions.score()
            }
            await #expect(throws: PredictionError("no fit 42 in cdp.prediction_fits")) {
                try await predictions.score(fitID: 42)
            }
            var settings = CustomerBaseSettings()
            settings.timeUnitDays = 0
            await #expect(throws: PredictionError("time unit 0.0 days: it must be more than 0 and at most 366")) {
                try await predictions.fit(settings)
            }
            settings = CustomerBaseSettings(purchaseEvent: "")
            await #expect(throws: PredictionError("the purchase event is empty")) { try await predictions.fit(settings) }

            // Purchases under another name only: nothing to fit, and a clear message saying which event had no buyers.
            try await IdentityFixture.write(
                (0..<30).map { F.event(.track, user: "u\($0 % 6)", event: "Purchased", at: F.day(Double($0))) }, client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            do {
                try await predictions.fit(CustomerBaseSettings(), asOf: F.day(60))
                Issue.record("a fit without purchases must fail")
            } catch let error as PredictionError {
                #expect(error.description.hasPrefix("cannot fit the purchase model on 0 buyers of 'Order Completed' before"))
            }
            #expect(try await client.query("SELECT count(*) FROM cdp.prediction_fits").scalar(Int.self) == 0)
        }
    }
}
