import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryFixtures
@testable import TributaryGovernance
@testable import TributaryIdentity
@testable import TributaryModel
@testable import TributaryPredictions
@testable import TributarySegments

/// Propensity scores on real PostgreSQL: the point-in-time examples against ones computed here from the generated
/// events, a model published above the quality bar, refusals below it, and what scoring and deletion leave.
@Suite struct PropensityTests {
    typealias F = ProfileFixture

    struct Sent {
        var user: String
        var event: String
        var at: Date
    }

    static let days = 120.0
    static let asOf = F.day(days)

    /// Users with an activity level of their own (0.05 to 1.5 events a day), a third of whom stop for good at some
    /// point; one event in ten is a purchase. Eighty pings fall on random users in each of the last two 14-day windows
    /// (a goal nothing predicts), and five "Rare" events in all.
    static func generate(seed: UInt64, users: Int) -> [Sent] {
        var random = SeededRandom(seed: seed)
        var sent: [Sent] = []
        for user in 0..<users {
            let rate = 0.05 + Double(random.below(146)) / 100
            let stop = random.chance(0.33) ? Double(random.below(Int(days))) : days
            var day = Double(random.below(60))
            while true {
                day += -log(max(1e-9, random.unit())) / rate
                guard day < min(stop, days) else { break }
                sent.append(Sent(user: "u\(user)", event: random.chance(0.1) ? "Order Completed" : "Page Viewed", at: F.day(day)))
            }
        }
        for window in [days - 28, days - 14] {
            for _ in 0..<80 {
                sent.append(
                    Sent(user: "u\(random.below(users))", event: "Ping", at: F.day(window + Double(random.below(13)) + 0.5)))
            }
        }
        for index in 0..<5 { sent.append(Sent(user: "u\(index)", event: "Rare", at: F.day(days - 20 + Double(index)))) }
        return sent
    }

    static func write(_ sent: [Sent], _ client: PostgresClient) async throws {
        try await IdentityFixture.write(sent.map { F.event(.track, user: $0.user, event: $0.event, at: $0.at) }, client)
        try await F.resolve(client, clock: asOf)
    }

    /// The stored scores of one propensity by user id.
    static func scores(_ name: String, _ client: PostgresClient) async throws -> [String: (Double, Double)] {
        var result: [String: (Double, Double)] = [:]
        for row in try await client.query(
            """
            SELECT n.value, x.probability, x.percentile FROM cdp.profile_propensities AS x
            JOIN cdp.identity_nodes AS n ON n.profile_id = x.profile_id AND n.kind = 'user_id' WHERE x.name = \(name)
            """)
        {
            let (user, probability, percentile) = try row.decode((String, Double, Double).self)
            result[user] = (probability, percentile)
        }
        return result
    }

    @Test func publishesAModelThatPredictsAndRefusesOnesThatDoNot() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let sent = Self.generate(seed: 11, users: 700)
            try await Self.write(sent, client)
            let scores = PropensityScores(client: client, logger: TestDatabase.logger)

            // The examples as of a cutoff, against the generated events: who is in, their counts, their label.
            let settings = PropensitySettings(name: "purchase_14d", kind: .goal, goalEvent: "Order Completed", windowDays: 14)
            let cutoff = Self.asOf.addingTimeInterval(-14 * 86_400)
            let examples = try await client.withConnection {
                try await PropensityScores.examples($0, settings, cutoff: cutoff, labelled: true)
            }
            let profiles = try await client.query(
                "SELECT profile_id, value FROM cdp.identity_nodes WHERE kind = 'user_id'"
            ).map { try $0.decode((UUID, String).self) }
            let userOf = Dictionary(uniqueKeysWithValues: profiles)
            let before = Dictionary(grouping: sent.filter { $0.at < cutoff }, by: \.user)
            #expect(Set(examples.profiles.map { userOf[$0]! }) == Set(before.keys))
            for (index, profile) in examples.profiles.enumerated() {
                let user = userOf[profile]!
                let events = before[user]!
                let row = Array(examples.features.row(index))
                let recent = events.filter { $0.at >= cutoff.addingTimeInterval(-30 * 86_400) }.count
                let bought = sent.contains {
                    $0.user == user && $0.event == "Order Completed" && $0.at >= cutoff
                        && $0.at < cutoff.addingTimeInterval(14 * 86_400)
                }
                #expect(abs(row[2] - log1p(Double(events.count))) < 1e-9 && abs(row[1] - log1p(Double(recent))) < 1e-9, "\(user)")
                let last = events.map(\.at).max()!
                #expect(abs(row[7] - cutoff.timeIntervalSince(last) / 86_400) < 1e-6)
                #expect(examples.labels[index] == bought, "\(user): label")
            }

            // Activity predicts purchases: published, every profile active in the year before scoring scored.
            let (model, scored) = try await scores.train(settings, asOf: Self.asOf)
            #expect(model.auc >= 0.6 && model.trainingPositives >= 50, "AUC \(model.auc), \(model.trainingPositives) positive")
            #expect((model.liftTopDecile ?? 0) > 1)
            let active = Set(sent.filter { $0.at < Self.asOf }.map(\.user))
            let stored = try await Self.scores("purchase_14d", client)
            #expect(scored == active.count && Set(stored.keys) == active)
            #expect(stored.values.allSatisfy { $0.0 > 0 && $0.0 < 1 && $0.1 >= 0 && $0.1 <= 100 })
            // The ten most active users over the last 30 days score above the ten least active.
            let lastMonth = Dictionary(grouping: sent.filter { $0.at >= Self.asOf.addingTimeInterval(-30 * 86_400) }, by: \.user)
            let ranked = active.sorted { (lastMonth[$0]?.count ?? 0, $0) > (lastMonth[$1]?.count ?? 0, $1) }
            let top = ranked.prefix(10).map { stored[$0]!.0 }.reduce(0, +)
            let bottom = ranked.suffix(10).map { stored[$0]!.0 }.reduce(0, +)
            #expect(top > bottom)
            #expect(try await scores.models().map(\.id) == [model.id])

            // Churn (nothing at all within the window) is predicted by recency.
            let (churn, _) = try await scores.train(
                PropensitySettings(name: "churn_14d", kind: .churn, windowDays: 14), asOf: Self.asOf)
            #expect(churn.auc >= 0.6, "churn AUC \(churn.auc)")

            // Predictive traits in segments: the top decile of buyers-to-be, from the file form and the Swift DSL.
            let file = #"""
                {"segments": [{"name": "likely_buyers", "conditions": [
                    {"prediction": "purchase_14d", "percentile": true, "op": ">=", "value": 90}]},
                  {"name": "churn_risk", "conditions": [{"prediction": "churn_14d", "op": ">", "value": 0.5}]}]}
                """#
            let definitions = try SegmentDefinitions.parse(Data(file.utf8))
            #expect(definitions.segments[0].conditions == [Prediction("purchase_14d").percentile >= 90])
            try await SegmentStore(client: client, logger: TestDatabase.logger).apply(definitions)
            try await SegmentMembership(client: client, logger: TestDatabase.logger).refresh()
            for (segment, condition) in [
                ("likely_buyers", "name = 'purchase_14d' AND percentile >= 90"),
                ("churn_risk", "name = 'churn_14d' AND probability > 0.5"),
            ] {
                let members = try await client.query(
                    "SELECT profile_id FROM cdp.segment_members WHERE segment = \(segment)"
                ).map { try $0.decode(UUID.self) }
                let expected = try await client.query(
                    PostgresQuery(unsafeSQL: "SELECT profile_id FROM cdp.profile_propensities WHERE \(condition)")
                ).map { try $0.decode(UUID.self) }
                #expect(!members.isEmpty && Set(members) == Set(expected), "\(segment)")
            }
            do {
                _ = try SegmentDefinitions.parse(
                    Data(
                        #"{"segments": [{"name": "x", "conditions": [{"prediction": "probability_alive", "percentile": true, "op": ">", "value": 1}]}]}"#
                            .utf8))
                Issue.record("a percentile of a customer-base score must be refused")
            } catch {
                #expect("\(error)".contains("'probability_alive' has no percentile (only propensities do)"), "\(error)")
            }

            // A goal nothing predicts, and one too rare: refused, with the figure that failed, and nothing stored.
            do {
                try await scores.train(
                    PropensitySettings(name: "ping_14d", kind: .goal, goalEvent: "Ping", windowDays: 14), asOf: Self.asOf)
                Issue.record("a model of random pings must not be published")
            } catch let error as PredictionError {
                #expect(error.description.contains("not published: the model's AUC on the held-out period is"), "\(error)")
            }
            do {
                try await scores.train(
                    PropensitySettings(name: "rare_14d", kind: .goal, goalEvent: "Rare", windowDays: 14), asOf: Self.asOf)
                Issue.record("a model with five positives must not be published")
            } catch let error as PredictionError {
                #expect(
                    error.description.contains(
                        "positive examples (goal event within the window) in the training period; at least 50"), "\(error)")
            }
            #expect(try await client.query("SELECT count(*) FROM cdp.propensity_models").scalar(Int.self) == 2)
            #expect(try await Self.scores("ping_14d", client).isEmpty)

            // Bad settings are refused before any work, naming the setting.
            await #expect(throws: PredictionError("propensity 'x': window of 3 days; it must be 7 to 90 days")) {
                try await scores.train(PropensitySettings(name: "x", kind: .churn, windowDays: 3))
            }
            await #expect(
                throws: PredictionError(
                    "propensity name 'Bad Name': use 1 to 63 lower case letters, digits and _, starting with a letter")
            ) {
                try await scores.train(PropensitySettings(name: "Bad Name", kind: .churn))
            }
            await #expect(
                throws: PredictionError(
                    "no propensity model 'nothing' yet (run `tributary predictions propensity nothing …` first)")
            ) {
                try await scores.score("nothing")
            }

            // Scoring again a day later; the worker's schedule retrains a week after the training data ends.
            let (_, rescored) = try await scores.score("purchase_14d", asOf: Self.asOf.addingTimeInterval(86_400))
            #expect(rescored == active.count)
            #expect(
                try await scores.runIfDue(now: Self.asOf.addingTimeInterval(2 * 86_400)) == [
                    "purchase_14d": "rescored", "churn_14d": "rescored",
                ])
            #expect(try await scores.runIfDue(now: Self.asOf.addingTimeInterval(2 * 86_400 + 60)) == [:])
            #expect(
                try await scores.runIfDue(now: Self.asOf.addingTimeInterval(8 * 86_400)) == [
                    "purchase_14d": "retrained", "churn_14d": "retrained",
                ])

            // A deletion takes the person's scores with it.
            let privacy = PrivacyRequests(client: client, logger: TestDatabase.logger)
            _ = try await privacy.delete(identifier: "user_id:\(ranked[0])", actor: .cli, registry: DestinationRegistry())
            #expect(try await Self.scores("purchase_14d", client)[ranked[0]] == nil)
        }
    }
}
