import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryFixtures
@testable import TributaryGovernance
@testable import TributaryIdentity
@testable import TributaryModel
@testable import TributaryPredictions

/// Next-best-product recommendations on real PostgreSQL: products seen together are recommended together, bought ones
/// never, old interactions fade, popular products fill up, and a deletion removes a person's rows.
@Suite struct RecommendationTests {
    typealias F = ProfileFixture

    static let now = F.day(200)

    static func viewed(_ user: String, _ product: String, daysAgo: Double) -> IncomingEvent {
        F.event(
            .track, user: user, event: "Product Viewed", properties: #"{"product_id": "\#(product)"}"#,
            at: now.addingTimeInterval(-daysAgo * 86_400))
    }

    /// An order in Segment's e-commerce form: the products in `properties.products`.
    static func ordered(_ user: String, _ products: [String], daysAgo: Double) -> IncomingEvent {
        let items = products.map { #"{"product_id": "\#($0)", "price": 10}"# }.joined(separator: ", ")
        return F.event(
            .track, user: user, event: "Order Completed", properties: #"{"revenue": 10, "products": [\#(items)]}"#,
            at: now.addingTimeInterval(-daysAgo * 86_400))
    }

    /// The stored recommendations of `user`, in rank order, as "product/source".
    static func recommendations(_ user: String, _ client: PostgresClient) async throws -> [String] {
        try await client.query(
            """
            SELECT r.product_id || '/' || r.source FROM cdp.profile_recommendations AS r
            JOIN cdp.identity_nodes AS n ON n.profile_id = r.profile_id AND n.kind = 'user_id' AND n.value = \(user)
            ORDER BY r.rank
            """
        ).map { try $0.decode(String.self) }
    }

    @Test func productsSeenTogetherAreRecommendedTogether() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            var events: [IncomingEvent] = []
            // Outdoor shoppers view a tent, a lamp and a stove; kitchen shoppers a grinder, a kettle and a pan (and
            // order two of them). The kitchen group is larger: its products are the popular ones.
            for index in 0..<12 {
                for product in ["tent", "lamp", "stove"] { events.append(Self.viewed("out\(index)", product, daysAgo: 3)) }
            }
            for index in 0..<20 {
                for product in ["grinder", "kettle", "pan"] { events.append(Self.viewed("kit\(index)", product, daysAgo: 5)) }
                events.append(Self.ordered("kit\(index)", ["grinder", "kettle"], daysAgo: 4))
            }
            // New here: viewed the tent; viewed a pan long ago (outside the lookback): the tent decides.
            events.append(Self.viewed("new", "tent", daysAgo: 1))
            events.append(Self.viewed("new", "pan", daysAgo: 400))
            // Bought the lamp (in an order's products) after viewing the tent: the lamp is never recommended to them.
            events.append(Self.viewed("buyer", "tent", daysAgo: 2))
            events.append(Self.ordered("buyer", ["lamp"], daysAgo: 1))
            // Only page views: no product interactions, no rows (the API falls back to the popular products).
            events.append(F.event(.page, user: "reader", at: Self.now.addingTimeInterval(-3600)))
            try await IdentityFixture.write(events, client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()

            let recommender = Recommendations(client: client, logger: TestDatabase.logger)
            let report = try await recommender.compute(RecommendationSettings(top: 4), asOf: Self.now)
            #expect(report.products == 6, "\(report)")

            let new = try await Self.recommendations("new", client)
            #expect(Set(new.prefix(2)) == ["lamp/similar", "stove/similar"], "\(new)")
            #expect(new.count == 4 && new.dropFirst(2).allSatisfy { $0.hasSuffix("/popular") }, "filled up: \(new)")
            let buyer = try await Self.recommendations("buyer", client)
            #expect(buyer.first == "stove/similar" && !buyer.contains { $0.hasPrefix("lamp/") }, "\(buyer)")
            // The kitchen shoppers bought the grinder and the kettle: the pan is their first recommendation.
            let kitchen = try await Self.recommendations("kit0", client)
            #expect(kitchen.first == "pan/similar" && !kitchen.contains { $0.hasPrefix("grinder/") || $0.hasPrefix("kettle/") })
            #expect(try await Self.recommendations("reader", client).isEmpty)
            let popular = try await client.query("SELECT product_id FROM cdp.popular_products ORDER BY rank LIMIT 2").map {
                try $0.decode(String.self)
            }
            #expect(Set(popular) == ["grinder", "kettle"], "\(popular)")

            // Bad settings, named; nothing replaced.
            await #expect(throws: PredictionError("recommendations: top 0; it must be 1 to 100")) {
                try await recommender.compute(RecommendationSettings(top: 0))
            }
            #expect(try await Self.recommendations("new", client) == new)

            // A deletion takes the person's recommendations with it.
            let privacy = PrivacyRequests(client: client, logger: TestDatabase.logger)
            _ = try await privacy.delete(identifier: "user_id:new", actor: .cli, registry: DestinationRegistry())
            #expect(try await Self.recommendations("new", client).isEmpty)
            #expect(try await Self.recommendations("buyer", client) == buyer)
        }
    }

    /// Product ids are user data: tabs, newlines, backslashes, quotes, commas and braces come back exactly as sent.
    @Test func productIdsWithSpecialCharactersSurvive() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let odd = "odd\tname\\with\nbreaks, \"quotes\" {braces} NULL \u{1F600}"
            var events: [IncomingEvent] = []
            for index in 0..<3 {
                events.append(Self.viewed("u\(index)", "plain", daysAgo: 2))
                events.append(
                    F.event(
                        .track, user: "u\(index)", event: "Product Viewed",
                        properties: JSONValue.object([("product_id", .string(odd))]).serialized,
                        at: Self.now.addingTimeInterval(-86_400)))
            }
            events.append(Self.viewed("new", "plain", daysAgo: 1))
            try await IdentityFixture.write(events, client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            try await Recommendations(client: client, logger: TestDatabase.logger).compute(asOf: Self.now)
            let products = try await client.query(
                """
                SELECT r.product_id FROM cdp.profile_recommendations AS r
                JOIN cdp.identity_nodes AS n ON n.profile_id = r.profile_id AND n.value = 'new' ORDER BY r.rank
                """
            ).map { try $0.decode(String.self) }
            #expect(products.first == odd, "\(products)")
        }
    }

    /// The co-occurrence summed in Swift gives the neighbours the SQL definition gives (the self-join the
    /// recommendations ran before), in the dense and in the hashed form, on random baskets with repeated interests.
    @Test(arguments: [40, 5_000])
    func similarityInSwiftIsTheSQLSelfJoin(products: Int) async throws {
        var random = SeededRandom(seed: UInt64(products))
        var baskets: [(ids: [Int32], interests: [Double])] = []
        for _ in 0..<300 {
            var ids = Set<Int32>()
            let size = 1 + random.below(12)
            // At most 60 of the ids in use, spread over the whole range (sparse when there are 5,000).
            while ids.count < size { ids.insert(Int32(random.below(min(products, 60)) * max(1, products / 60))) }
            let ordered = ids.sorted()
            baskets.append((ordered, ordered.map { _ in Double(1 + random.below(4)) * 0.5 }))
        }
        let swift = ItemSimilarity(products: products, keep: 5) { visit in
            for basket in baskets { visit(basket.ids[...], basket.interests[...]) }
        }
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let rows = baskets.enumerated().flatMap { index, basket in
                zip(basket.ids, basket.interests).map { "(\(index), \($0.0), \($0.1))" }
            }
            let sql = try await client.query(
                PostgresQuery(
                    unsafeSQL: """
                        WITH basket (profile_id, id, interest) AS (VALUES \(rows.joined(separator: ", "))),
                        totals AS (SELECT id, sum(interest) AS total FROM basket GROUP BY id),
                        half AS (
                            SELECT a.id AS i, b.id AS j, sum(least(a.interest, b.interest)) AS together
                            FROM basket AS a JOIN basket AS b ON b.profile_id = a.profile_id AND b.id > a.id
                            GROUP BY a.id, b.id
                        ),
                        pairs AS (SELECT i, j, together FROM half UNION ALL SELECT j, i, together FROM half)
                        SELECT i, j, similarity FROM (
                            SELECT p.i, p.j, p.together / sqrt(ti.total * tj.total) AS similarity,
                                   row_number() OVER (PARTITION BY p.i ORDER BY p.together / sqrt(ti.total * tj.total) DESC, p.j)
                                       AS position
                            FROM pairs AS p JOIN totals AS ti ON ti.id = p.i JOIN totals AS tj ON tj.id = p.j
                        ) AS ranked
                        WHERE position <= 5 ORDER BY i, position
                        """)
            ).map { try $0.decode((Int, Int, Double).self) }
            var expected = [[ItemSimilarity.Neighbour]](repeating: [], count: products)
            for (i, j, similarity) in sql { expected[i].append(.init(product: j, similarity: similarity)) }
            #expect(swift.pairs == sql.count && sql.count > 150, "\(swift.pairs) against \(sql.count)")
            for product in 0..<products where swift.neighbours[product] != expected[product] {
                let same =
                    swift.neighbours[product].count == expected[product].count
                    && zip(swift.neighbours[product], expected[product]).allSatisfy {
                        $0.product == $1.product && abs($0.similarity - $1.similarity) < 1e-12
                    }
                #expect(same, "product \(product): \(swift.neighbours[product]) against \(expected[product])")
            }
        }
    }
}
