import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryFixtures
@testable import TributaryIdentity
@testable import TributaryModel
@testable import TributaryPredictions
@testable import TributaryProfiles
@testable import TributarySegments
@testable import TributaryService

/// Predictive traits of the computed traits file on real PostgreSQL: the file decides which models are fitted,
/// trained and computed; `cdp.profiles` carries their scores as typed columns; a refused model is reported and tried
/// again a day later; segments select on them.
@Suite struct PredictiveTraitTests {
    typealias F = ProfileFixture

    static let asOf = PropensityTests.asOf

    static func file(buysWithin: Int = 14) -> String {
        #"""
        {"computedTraits": [
          {"name": "orders", "aggregate": "count", "events": ["Order Completed"]},
          {"name": "buys_soon", "kind": "prediction", "predict": "goal", "event": "Order Completed", "within": {"days": \#(buysWithin)}},
          {"name": "pings_soon", "kind": "prediction", "predict": "goal", "event": "Ping", "within": {"days": 14}},
          {"name": "alive", "kind": "prediction", "predict": "probability_alive"},
          {"name": "clv", "kind": "prediction", "predict": "predicted_lifetime_value", "within": {"days": 180}},
          {"name": "next_products", "kind": "prediction", "predict": "recommended_products", "top": 2}
        ]}
        """#
    }

    /// The propensity test's users (orders with a revenue), and product views by the first 60 of them.
    static func write(_ client: PostgresClient) async throws {
        let sent = PropensityTests.generate(seed: 11, users: 700)
        var events = sent.enumerated().map { index, sent in
            F.event(
                .track, user: sent.user, event: sent.event,
                properties: sent.event == "Order Completed" ? #"{"revenue": \#(10 + index % 37)}"# : "{}", at: sent.at)
        }
        for user in 0..<60 {
            for product in user % 2 == 0 ? ["tent", "lamp", "stove"] : ["kettle", "pan"] where user > 1 || product != "stove" {
                events.append(
                    F.event(
                        .track, user: "u\(user)", event: "Product Viewed", properties: #"{"product_id": "\#(product)"}"#,
                        at: asOf.addingTimeInterval(-86_400)))
            }
        }
        try await IdentityFixture.write(events, client)
        try await F.resolve(client, clock: asOf)
    }

    /// Profiles whose column `column` of `cdp.profiles` differs from `expected` (an SQL expression over `v`, the view
    /// row), and profiles where it has a value.
    static func mismatches(_ column: String, _ expected: String, _ client: PostgresClient) async throws -> (Int, Int) {
        let quoted = try SQLQuoting.identifier(column)
        return try await client.query(
            PostgresQuery(
                unsafeSQL: """
                    SELECT count(*) FILTER (WHERE v.\(quoted) IS DISTINCT FROM \(expected)),
                           count(*) FILTER (WHERE v.\(quoted) IS NOT NULL)
                    FROM cdp.profiles AS v
                    """)
        ).first!.decode((Int, Int).self)
    }

    @Test func theFileDecidesWhatIsTrainedAndProfilesCarryTheScores() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await Self.write(client)
            let admin = ProfileAdmin(client: client, logger: TestDatabase.logger)
            let definitions = try await admin.load(Data(Self.file().utf8))
            #expect(try await admin.apply(definitions))
            let traits = PredictiveTraits(client: client, logger: TestDatabase.logger)

            // Before anything is trained the columns exist and are NULL.
            #expect(try await Self.mismatches("buys_soon", "NULL", client) == (0, 0))

            let outcomes = try await traits.apply(definitions, previous: ComputedTraitDefinitions(), now: Self.asOf)
            let byTrait = Dictionary(uniqueKeysWithValues: outcomes.map { ($0.trait, $0.action) })
            #expect(outcomes.map(\.trait) == ["alive, clv", "buys_soon", "pings_soon", "next_products"], "\(outcomes)")
            guard case .fitted? = byTrait["alive, clv"], case .trained(let buysModel, _)? = byTrait["buys_soon"],
                case .refused(let reason)? = byTrait["pings_soon"], case .recommended(let profiles)? = byTrait["next_products"]
            else {
                Issue.record("\(outcomes)")
                return
            }
            #expect(reason.contains("propensity 'pings_soon'") && reason.contains("not published"), "\(reason)")
            #expect(profiles == 60)
            let fit = try #require(try await CustomerBasePredictions(client: client, logger: TestDatabase.logger).storedFit())
            #expect(fit.settings.lifetimeDays == 180 && fit.settings.purchasesDays == 90, "\(fit.settings)")

            // The columns are the stored scores, typed.
            let types = try await client.query(
                """
                SELECT column_name, data_type FROM information_schema.columns
                WHERE table_schema = 'cdp' AND table_name = 'profiles'
                  AND column_name IN ('buys_soon', 'pings_soon', 'alive', 'clv', 'next_products') ORDER BY column_name
                """
            ).map { try $0.decode((String, String).self) }
            #expect(
                types.map { "\($0.0) \($0.1)" } == [
                    "alive double precision", "buys_soon double precision", "clv double precision", "next_products ARRAY",
                    "pings_soon double precision",
                ])
            let buys = try await Self.mismatches(
                "buys_soon",
                "(SELECT x.probability FROM cdp.profile_propensities AS x WHERE x.profile_id = v.profile_id AND x.name = 'buys_soon')",
                client)
            #expect(buys.0 == 0 && buys.1 > 500, "\(buys)")
            let alive = try await Self.mismatches(
                "alive", "(SELECT x.probability_alive FROM cdp.profile_predictions AS x WHERE x.profile_id = v.profile_id)",
                client)
            #expect(alive.0 == 0 && alive.1 > 100, "\(alive)")
            let clv = try await Self.mismatches(
                "clv", "(SELECT x.predicted_lifetime_value FROM cdp.profile_predictions AS x WHERE x.profile_id = v.profile_id)",
                client)
            #expect(clv.0 == 0 && clv.1 > 100, "\(clv)")
            #expect(try await Self.mismatches("pings_soon", "NULL", client) == (0, 0))
            // Recommendations: the profile's list, or the popular products for a profile without one.
            let next = try await Self.mismatches(
                "next_products",
                """
                coalesce((SELECT x.product_ids[1:2] FROM cdp.profile_recommendation_lists AS x WHERE x.profile_id = v.profile_id),
                         (SELECT array_agg(product_id ORDER BY rank) FROM cdp.popular_products WHERE rank <= 2))
                """, client)
            #expect(next.0 == 0 && next.1 > 600, "\(next)")
            // Someone who viewed the outdoor products is recommended outdoor products (viewing is not buying), never the
            // kitchen ones nobody viewed with them.
            let u0 = try await client.query(
                """
                SELECT v.next_products FROM cdp.profiles AS v
                JOIN cdp.identity_nodes AS n ON n.profile_id = v.profile_id AND n.kind = 'user_id' AND n.value = 'u0'
                """
            ).first!.decode([String].self)
            #expect(u0.count == 2 && !u0.contains("kettle") && !u0.contains("pan"), "\(u0)")
            // A query that reads none of the predictive columns does not join their tables.
            let plan = try await client.query("EXPLAIN (COSTS OFF) SELECT count(*) FROM cdp.profiles").map {
                try $0.decode(String.self)
            }.joined(separator: "\n")
            #expect(!plan.contains("profile_propensities") && !plan.contains("profile_predictions"), "\(plan)")

            // The same file again: nothing is retrained; the refused model is tried again (apply always tries).
            let again = try await traits.apply(definitions, previous: definitions, now: Self.asOf)
            #expect(again.map(\.action.description).filter { $0 == "current" }.count == 3, "\(again)")
            // A changed window retrains that model only.
            let changed = try await admin.load(Data(Self.file(buysWithin: 21).utf8))
            _ = try await admin.apply(changed)
            let retrained = try await traits.apply(changed, previous: definitions, now: Self.asOf)
            guard case .trained(let newModel, _)? = retrained.first(where: { $0.trait == "buys_soon" })?.action else {
                Issue.record("\(retrained)")
                return
            }
            #expect(newModel > buysModel)
            #expect(retrained.filter { $0.action == .current }.map(\.trait) == ["alive, clv", "next_products"])

            // A stored segment on the score follows new scores at once (the hand-off), not at the next refresh.
            let store = SegmentStore(client: client, logger: TestDatabase.logger)
            _ = try await store.apply(
                try await store.load(
                    Data(
                        #"{"segments": [{"name": "likely_buyers", "conditions": [{"computed": "buys_soon", "op": ">", "value": 0.3}]}, {"name": "other", "conditions": [{"computed": "orders", "op": ">", "value": 2}]}]}"#
                            .utf8)))
            try await client.execute("DELETE FROM cdp.segment_members")
            let handOff = try await PredictionHandOff.refreshSegments(client: client, logger: TestDatabase.logger)
            let segmentMembers = try await client.query(
                "SELECT count(*) FROM cdp.segment_members WHERE segment = 'likely_buyers'"
            ).scalar(Int.self)
            let scoredAbove = try await client.query("SELECT count(*) FROM cdp.profiles WHERE buys_soon > 0.3").scalar(Int.self)
            #expect(handOff.segments == 1 && segmentMembers == scoredAbove && scoredAbove > 0, "\(handOff)")
            #expect(
                try await client.query("SELECT count(*) FROM cdp.segment_members WHERE segment = 'other'").scalar(Int.self) == 0)

            // The worker's schedule: the refused model waits a day, then is tried again; the recommendations are
            // computed again once a day old.
            #expect(try await traits.runIfDue(now: Self.asOf.addingTimeInterval(3600)).isEmpty)
            let later = try await traits.runIfDue(now: Self.asOf.addingTimeInterval(2 * 86_400))
            #expect(later.map(\.trait) == ["pings_soon", "next_products"], "\(later)")

            // Segments compare the columns as computed traits.
            let segments = try SegmentDefinitions.parse(
                Data(
                    #"""
                    {"segments": [{"name": "likely", "conditions": [{"computed": "buys_soon", "op": ">", "value": 0.3}],
                                   "fields": [{"name": "clv", "computed": "clv"}]}]}
                    """#.utf8), computed: changed)
            let compiler = SegmentCompiler(segments, computed: changed)
            let members = try await client.query(try compiler.select("likely")).map {
                try $0.decode((UUID, Double?).self)
            }
            let expected = try await client.query("SELECT profile_id, clv FROM cdp.profiles WHERE buys_soon > 0.3").map {
                try $0.decode((UUID, Double?).self)
            }
            #expect(!members.isEmpty && Set(members.map(\.0)) == Set(expected.map(\.0)))
            #expect(
                Dictionary(uniqueKeysWithValues: members.map { ($0.0, $0.1) })
                    == Dictionary(uniqueKeysWithValues: expected.map { ($0.0, $0.1) }))
        }
    }
}
