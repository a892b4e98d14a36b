import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryFixtures
@testable import TributaryModel
@testable import TributaryProfiles
@testable import TributarySegments

/// Computed traits on real PostgreSQL against values computed here, independently, from the generated events.
@Suite struct ComputedTraitTests {
    typealias F = ProfileFixture

    /// One generated event of one user, as the test knows it.
    struct Sent {
        var user: String
        var event: String
        var at: Date
        var revenue: Double?
        var currency: String?
        var category: String?
        var name: String?
        var coupon: Bool
        var seq = 0
    }

    static let definitions = ComputedTraitDefinitions(computedTraits: [
        .count("orders", of: "Order Completed"),
        .count("orders_30d", of: "Order Completed", within: .days(30)),
        .sum("lifetime_value", Property<Double>("revenue"), of: "Order Completed"),
        .average("average_order", Property<Double>("revenue"), of: "Order Completed"),
        .min("smallest_order", Property<Double>("revenue"), of: "Order Completed"),
        .max("largest_order", Property<Double>("revenue"), of: "Order Completed"),
        .count("big_orders", of: "Order Completed") { Property<Double>("revenue") > 50.0 },
        .count("eur_orders", of: "Order Completed") { Property<String>("currency") == "EUR" },
        .count("coupon_orders", of: "Order Completed") { Property<Bool>("coupon").exists },
        .first("first_category", Property<String>("category"), of: "Product Viewed"),
        .last("last_category", Property<String>("category"), of: "Product Viewed"),
        .distinctCount("categories_viewed", Property<String>("category"), of: "Product Viewed"),
        .mostFrequent("favourite_category", Property<String>("category"), of: "Product Viewed"),
        .count("outdoor_or_kitchen_views", of: "Product Viewed") { Property<String>("category").isIn(["outdoor", "kitchen"]) },
        .count("shoe_views", of: "Product Viewed") { Property<String>("name").contains("Shoe") },
        .daysSinceFirst("days_since_first_order", of: "Order Completed"),
        .daysSinceLast("days_since_last_event"),
    ])

    static func generate(seed: UInt64, users: Int, now: Date) -> [Sent] {
        var random = SeededRandom(seed: seed)
        var sent: [Sent] = []
        let categories = ["shoes", "outdoor", "kitchen", "books"]
        for user in 0..<users {
            for _ in 0..<random.below(14) {
                let at = now.addingTimeInterval(-Double(random.below(60 * 24 * 60)) * 60 - 1)
                if random.chance(0.5) {
                    // Revenue sometimes missing or sent as a string: neither may count as a number.
                    let revenue: Double? = random.chance(0.85) ? Double(random.below(20_000)) / 100 : nil
                    sent.append(
                        Sent(
                            user: "u\(user)", event: "Order Completed", at: at, revenue: revenue,
                            currency: random.pick(["EUR", "USD", "EUR"]), category: nil, name: nil, coupon: random.chance(0.3)))
                } else {
                    let category = random.chance(0.9) ? random.pick(categories) : nil
                    sent.append(
                        Sent(
                            user: "u\(user)", event: "Product Viewed", at: at, revenue: nil, currency: nil, category: category,
                            name: random.pick(["Trail Shoes", "Rain Jacket", "Grinder"]), coupon: false))
                }
            }
        }
        return sent
    }

    static func incoming(_ sent: Sent) -> IncomingEvent {
        var properties: [String] = []
        if let revenue = sent.revenue {
            properties.append(#""revenue": \#(revenue)"#)
        } else if sent.event == "Order Completed" {
            properties.append(#""revenue": "n/a""#)
        }
        if let currency = sent.currency { properties.append(#""currency": "\#(currency)""#) }
        if let category = sent.category { properties.append(#""category": "\#(category)""#) }
        if let name = sent.name { properties.append(#""name": "\#(name)""#) }
        if sent.coupon { properties.append(#""coupon": true"#) }
        return F.event(
            .track, user: sent.user, event: sent.event, properties: "{\(properties.joined(separator: ", "))}", at: sent.at)
    }

    /// The expected computed traits of one user's events.
    static func expected(_ events: [Sent], now: Date) -> [String: Double?] {
        let orders = events.filter { $0.event == "Order Completed" }
        let views = events.filter { $0.event == "Product Viewed" }
        let revenues = orders.compactMap(\.revenue)
        let categories = views.sorted { $0.at == $1.at ? $0.seq < $1.seq : $0.at < $1.at }.compactMap(\.category)
        var counts: [String: Int] = [:]
        for category in categories { counts[category, default: 0] += 1 }
        let favourite = counts.sorted { $0.value == $1.value ? $0.key < $1.key : $0.value > $1.value }.first?.key
        func code(_ text: String?) -> Double? {
            text.map { Double(["shoes", "outdoor", "kitchen", "books"].firstIndex(of: $0)!) }
        }
        func days(_ date: Date?) -> Double? { date.map { (now.timeIntervalSince($0) / 86_400).rounded(.down) } }
        return [
            "orders": Double(orders.count),
            "orders_30d": Double(orders.filter { $0.at > now.addingTimeInterval(-30 * 86_400) }.count),
            "lifetime_value": revenues.isEmpty ? nil : revenues.reduce(0, +),
            "average_order": revenues.isEmpty ? nil : revenues.reduce(0, +) / Double(revenues.count),
            "smallest_order": revenues.min(),
            "largest_order": revenues.max(),
            "big_orders": Double(revenues.filter { $0 > 50 }.count),
            "eur_orders": Double(orders.filter { $0.currency == "EUR" }.count),
            "coupon_orders": Double(orders.filter(\.coupon).count),
            "first_category": code(categories.first),
            "last_category": code(categories.last),
            "categories_viewed": Double(Set(categories).count),
            "favourite_category": code(favourite),
            "outdoor_or_kitchen_views": Double(categories.filter { $0 == "outdoor" || $0 == "kitchen" }.count),
            "shoe_views": Double(views.filter { $0.name?.contains("Shoe") == true }.count),
            "days_since_first_order": days(orders.map(\.at).min()),
            "days_since_last_event": days(events.map(\.at).max()),
        ]
    }

    /// The computed traits of a profile as numbers (categories as their index), for comparison.
    static func numbers(_ computed: [String: String]) -> [String: Double?] {
        var result: [String: Double?] = [:]
        for (key, value) in computed where !key.hasPrefix("rfm_") {
            if let index = ["shoes", "outdoor", "kitchen", "books"].firstIndex(of: value) {
                result[key] = Double(index)
            } else {
                result[key] = value == "null" ? .some(nil) : Double(value)
            }
        }
        return result
    }

    static func close(_ a: [String: Double?], _ b: [String: Double?]) -> Bool {
        guard Set(a.keys) == Set(b.keys) else { return false }
        return a.allSatisfy { key, value in
            switch (value, b[key]!) {
            case (nil, nil): true
            case (let x?, let y?): abs(x - y) <= 1e-9 * max(1, abs(x))
            default: false
            }
        }
    }

    @Test(arguments: [UInt64(1), 2, 3, 4, 5])
    func computedTraitsMatchAnIndependentComputation(seed: UInt64) async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.apply(Self.definitions, client)
            let now = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 1000).rounded() * 1000)
            var sent = Self.generate(seed: seed, users: 40, now: now)
            // In three deliveries, each resolved: the incremental path.
            for chunk in stride(from: 0, to: sent.count, by: 70) {
                try await F.ingest(sent[chunk..<min(chunk + 70, sent.count)].map(Self.incoming), client, clock: now)
            }
            let seqs = try await client.query("SELECT seq FROM cdp.events ORDER BY seq").map { try $0.decode(Int.self) }
            for index in sent.indices { sent[index].seq = seqs[index] }
            let byUser = Dictionary(grouping: sent, by: \.user)
            var incremental: [String: [String: String]] = [:]
            for (user, events) in byUser {
                let computed = try await F.computed(of: user, client)
                incremental[user] = computed
                let expected = Self.expected(events, now: now)
                #expect(Self.close(Self.numbers(computed), expected), "\(user): \(computed) vs \(expected)")
            }
            // The bulk recompute at the same moment agrees with the incremental path.
            _ = try await ProfileStage(
                client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()], clock: { now }
            ).recomputeAll()
            for (user, before) in incremental {
                let after = try await F.computed(of: user, client)
                #expect(after.filter { !$0.key.hasPrefix("rfm_") } == before.filter { !$0.key.hasPrefix("rfm_") })
            }
            // RFM: quintile boundaries of buyers' last purchase time, purchase count and value, then a score per buyer
            // (5: the most recent, most frequent, highest value fifth).
            let buyers = byUser.compactMapValues { events -> (r: Double, f: Double, m: Double)? in
                let orders = events.filter { $0.event == "Order Completed" }
                guard let last = orders.map(\.at).max() else { return nil }
                return (last.timeIntervalSince1970, Double(orders.count), orders.compactMap(\.revenue).reduce(0, +))
            }
            func quintiles(_ values: [Double]) -> [Double] {
                let sorted = values.sorted()
                return [0.2, 0.4, 0.6, 0.8].map { p in
                    let position = p * Double(sorted.count - 1)
                    let low = Int(position.rounded(.down)), high = Int(position.rounded(.up))
                    return sorted[low] + (sorted[high] - sorted[low]) * (position - Double(low))
                }
            }
            let r = quintiles(buyers.values.map(\.r)), f = quintiles(buyers.values.map(\.f)),
                m = quintiles(buyers.values.map(\.m))
            for (user, values) in buyers {
                let computed = try await F.computed(of: user, client)
                let scores = [
                    1 + r.filter { values.r > $0 }.count, 1 + f.filter { values.f > $0 }.count,
                    1 + m.filter { values.m > $0 }.count,
                ]
                #expect(computed["rfm_recency"] == String(scores[0]), "\(user) recency \(values.r) vs \(r)")
                #expect(computed["rfm_frequency"] == String(scores[1]), "\(user) frequency \(values.f) vs \(f)")
                #expect(computed["rfm_monetary"] == String(scores[2]), "\(user) monetary \(values.m) vs \(m)")
                #expect(computed["rfm_score"] == scores.map(String.init).joined())
            }
            // The typed columns of cdp.profiles read the same values.
            let typed = try await client.query(
                """
                SELECT sum(orders), sum(lifetime_value), count(favourite_category), count(rfm_score) FROM cdp.profiles
                """
            ).first!.decode((Int, Double, Int, Int).self)
            #expect(typed.0 == sent.filter { $0.event == "Order Completed" }.count)
            #expect(abs(typed.1 - sent.compactMap(\.revenue).reduce(0, +)) < 1e-6)
            #expect(typed.3 == buyers.count)
        }
    }

    /// The stage combines each profile's stored aggregate state with a batch's events; a profile without a state (an
    /// upgrade) or with one of other definitions is computed from all its events instead, and either way the traits
    /// equal an independent computation.
    @Test func profilesWithoutAUsableStateAreComputedFromTheirEvents() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.apply(Self.definitions, client)
            let now = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 1000).rounded() * 1000)
            var sent = Self.generate(seed: 11, users: 24, now: now)
            let half = sent.count * 2 / 3
            try await F.ingest(sent[..<half].map(Self.incoming), client, clock: now)
            let states = try await client.query("SELECT count(*) FROM cdp.profile_data WHERE aggregates ->> 'd' LIKE 'v1-%'")
                .scalar(Int.self)
            #expect(states == Set(sent[..<half].map(\.user)).count)
            try await client.execute(
                """
                UPDATE cdp.profile_data SET aggregates = NULL
                WHERE profile_id IN (SELECT profile_id FROM cdp.profile_data ORDER BY profile_id LIMIT 4)
                """)
            try await client.execute(
                """
                UPDATE cdp.profile_data SET aggregates = aggregates || '{"d": "v1-other", "n": 1000}'
                WHERE profile_id IN (SELECT profile_id FROM cdp.profile_data ORDER BY profile_id OFFSET 4 LIMIT 4)
                """)
            for chunk in stride(from: half, to: sent.count, by: 25) {
                try await F.ingest(sent[chunk..<min(chunk + 25, sent.count)].map(Self.incoming), client, clock: now)
            }
            let seqs = try await client.query("SELECT seq FROM cdp.events ORDER BY seq").map { try $0.decode(Int.self) }
            for index in sent.indices { sent[index].seq = seqs[index] }
            for (user, events) in Dictionary(grouping: sent, by: \.user) {
                let computed = try await F.computed(of: user, client)
                let expected = Self.expected(events, now: now)
                #expect(Self.close(Self.numbers(computed), expected), "\(user): \(computed) vs \(expected)")
                let count = try await client.query(
                    """
                    SELECT p.event_count FROM cdp.profiles AS p JOIN cdp.identities AS i USING (profile_id)
                    WHERE i.kind = 'user_id' AND i.value = \(user)
                    """
                ).scalar(Int.self)
                #expect(count == events.count)
            }
        }
    }

    @Test func timeWindowsExpireWithTheBulkRecompute() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.apply(
                ComputedTraitDefinitions(
                    computedTraits: [
                        .count("orders_7d", of: "Order Completed", within: .days(7)),
                        .daysSinceLast("days_since_last_order", of: "Order Completed"),
                    ], rfm: RFMSettings(enabled: false)), client)
            let now = Date()
            try await F.ingest(
                [
                    F.event(.track, user: "u1", event: "Order Completed", at: now.addingTimeInterval(-6.5 * 86_400)),
                    F.event(.track, user: "u1", event: "Order Completed", at: now.addingTimeInterval(-1 * 86_400)),
                ], client, clock: now)
            #expect(try await F.computed(of: "u1", client) == ["orders_7d": "2", "days_since_last_order": "1"])
            // A day later, with no new event, the bulk recompute moves the window on.
            let later = now.addingTimeInterval(86_400)
            let changed = try await ProfileStage(
                client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()], clock: { later }
            ).recomputeAll(full: false)
            #expect(changed == 1)
            #expect(try await F.computed(of: "u1", client) == ["orders_7d": "1", "days_since_last_order": "2"])
            let typed = try await client.query("SELECT orders_7d, days_since_last_order FROM cdp.profiles").first!.decode(
                (Int, Int).self)
            #expect(typed == (1, 2))
        }
    }

    @Test func hostileNamesAndValuesCompileAndRun() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let hostile = #"it's "quoted" \ back\\slash -- comment; DROP TABLE cdp.events; ü 🎉"#
            try await F.apply(
                ComputedTraitDefinitions(
                    computedTraits: [
                        ComputedTrait(
                            "hostile_count", .count, events: [hostile],
                            where: [
                                PropertyCondition(property: hostile, op: .equal, value: .string(hostile)),
                                PropertyCondition(property: hostile, op: .contains, value: .string("'s \"quoted\" \\ back")),
                                PropertyCondition(
                                    property: "n", op: .in, value: .list([.string(hostile), .number(1.5), .bool(true)])),
                            ]),
                        ComputedTrait("hostile_last", .last, property: hostile, events: [hostile]),
                    ], rfm: RFMSettings(event: hostile, revenueProperty: hostile)), client)
            let escaped = String(decoding: try JSONEncoder().encode(hostile), as: UTF8.self)
            try await F.ingest(
                [
                    F.event(.track, user: "u1", event: hostile, properties: #"{\#(escaped): \#(escaped), "n": 1.5}"#, at: Date())
                ], client)
            #expect(try await F.computed(of: "u1", client)["hostile_count"] == "1")
            #expect(try await F.computed(of: "u1", client)["hostile_last"] == hostile)
            _ = try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()])
                .recomputeAll()
            #expect(try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self) == 1)
        }
    }
}

/// Definitions files: the JSON form, its validation errors, the DSL's typing, the compiled SQL.
@Suite struct ComputedTraitDefinitionTests {
    func parse(_ json: String, catalog: Catalog? = nil) throws -> ComputedTraitDefinitions {
        try ComputedTraitDefinitions.parse(Data(json.utf8), catalog: catalog)
    }

    func error(_ json: String, catalog: Catalog? = nil) -> String {
        do {
            _ = try parse(json, catalog: catalog)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func theJSONFormRoundTripsWithTheDSL() throws {
        let json = """
            {"computedTraits": [
              {"name": "lifetime_value", "aggregate": "sum", "property": "revenue", "events": ["Order Completed"]},
              {"name": "big_orders_30d", "aggregate": "count", "events": ["Order Completed"], "within": {"days": 30},
               "where": [{"property": "revenue", "op": ">", "value": 100}]}
            ], "rfm": {"enabled": false}}
            """
        let parsed = try parse(json)
        let dsl = ComputedTraitDefinitions(
            computedTraits: [
                .sum("lifetime_value", Property<Double>("revenue"), of: "Order Completed"),
                .count("big_orders_30d", of: "Order Completed", within: .days(30)) { Property<Double>("revenue") > 100.0 },
            ], rfm: RFMSettings(enabled: false))
        #expect(parsed == dsl)
        #expect(try ComputedTraitDefinitions.parse(try dsl.canonicalJSON()) == dsl)
    }

    @Test func errorsNameThePathOfTheProblem() {
        #expect(
            error(#"{"computedTraits": [{"name": "x", "aggregate": "sum"}]}"#)
                == "computedTraits[0].property: required for aggregate 'sum'")
        #expect(
            error(#"{"computedTraits": [{"name": "x", "aggregate": "total"}]}"#)
                == "computedTraits[0].aggregate: unknown aggregate 'total'; use count, sum, average, min, max, first, last, distinct_count, most_frequent, days_since_first, days_since_last"
        )
        #expect(
            error(#"{"computedTraits": [{"name": "x", "aggregate": "count", "whre": []}]}"#)
                == "computedTraits[0].whre: unknown key; known keys are name, kind, aggregate, property, events, types, where, within, description"
        )
        #expect(
            error(#"{"computedTraits": [{"name": "Bad Name", "aggregate": "count"}]}"#)
                == "computedTraits[0].name: 'Bad Name' is not a valid name (lower-case letters, digits and _, starting with a letter or _, at most 63 bytes)"
        )
        #expect(
            error(#"{"computedTraits": [{"name": "traits", "aggregate": "count"}]}"#)
                == "computedTraits[0].name: 'traits' is reserved for a built-in column of cdp.profiles")
        #expect(
            error(#"{"computedTraits": [{"name": "a", "aggregate": "count"}, {"name": "a", "aggregate": "count"}]}"#)
                == "computedTraits[1].name: 'a' is already the name of computedTraits[0]")
        #expect(
            error(#"{"computedTraits": [{"name": "a", "aggregate": "count", "within": {"days": 0}}]}"#)
                == "computedTraits[0].within.days: must be between 1 and 36500, got 0")
        #expect(
            error(#"{"computedTraits": [{"name": "a", "aggregate": "count", "within": {"days": "30"}}]}"#)
                == "computedTraits[0].within.days: must be an integer")
        #expect(
            error(
                #"{"computedTraits": [{"name": "a", "aggregate": "count", "where": [{"property": "p", "op": ">", "value": "5"}]}]}"#
            )
                == "computedTraits[0].where[0].value: operator '>' needs a number, got string")
        #expect(
            error(
                #"{"computedTraits": [{"name": "a", "aggregate": "count", "where": [{"property": "p", "op": "in", "value": 5}]}]}"#
            )
                == "computedTraits[0].where[0].value: 'in' needs a list, got number")
        #expect(
            error(#"{"computedTraits": [{"name": "a", "aggregate": "count", "types": ["click"]}]}"#)
                == "computedTraits[0].types[0]: unknown call type 'click'; use alias, group, identify, page, screen, track")
        #expect(
            error(#"{"computedTraits": [{"name": "a", "aggregate": "count"}], "rfm": {"event": ""}}"#)
                == "rfm.event: must not be empty")
        #expect(error("{").hasPrefix("(document): not valid JSON"))
    }

    @Test func propertyTypesAreCheckedAgainstTheCatalog() {
        let catalog = Catalog(
            traits: [:],
            events: ["Order Completed": .init(properties: ["revenue": .init(type: .double), "currency": .init(type: .string)])])
        #expect(
            error(
                #"""
                {"computedTraits": [{"name": "a", "aggregate": "count", "events": ["Order Completed"],
                  "where": [{"property": "revenue", "op": "=", "value": "100"}]}]}
                """#, catalog: catalog) == "computedTraits[0].where[0]: property 'revenue' is Double, got string")
        #expect(
            error(
                #"""
                {"computedTraits": [{"name": "a", "aggregate": "sum", "property": "currency", "events": ["Order Completed"]}]}
                """#, catalog: catalog)
                == "computedTraits[0].property: aggregate 'sum' needs a number; property 'currency' is String")
        #expect(
            error(#"{"rfm": {"revenueProperty": "currency"}}"#, catalog: catalog)
                == "rfm.revenueProperty: property 'currency' of 'Order Completed' is String, not a number")
    }

    @Test func compilesToReadableSQL() throws {
        let compiler = ComputedTraitCompiler(
            ComputedTraitDefinitions(
                computedTraits: [
                    .count("big_orders_30d", of: "Order Completed", within: .days(30)) { Property<Double>("revenue") > 100.0 },
                    .mostFrequent("favourite_category", Property<String>("category"), of: "Product Viewed"),
                ], rfm: RFMSettings(enabled: false)))
        let query = try compiler.aggregateSQL(asOf: Date(timeIntervalSince1970: 1_000), through: 42)
        // Every value of the definitions is a bind; read with the values inlined:
        #expect(!query.sql.contains("Order Completed") && query.binds.count == 5)
        let sql = try query.inlined().sql
        #expect(
            sql == """
                SELECT e.profile_id,
                       min(e.timestamp) AS first_seen_at,
                       max(e.timestamp) AS last_seen_at,
                       count(*) AS event_count,
                       count(*) FILTER (WHERE e.event = 'Order Completed' AND e.timestamp > (timestamptz 'epoch' + 1000000000 * interval '1 microsecond') - interval '24 hours' * 30 AND cdp.jsonb_numeric(e.properties -> 'revenue') > 100) AS t0,
                       mode() WITHIN GROUP (ORDER BY e.properties -> 'category') FILTER (WHERE e.event = 'Product Viewed' AND jsonb_typeof(e.properties -> 'category') <> 'null') AS t1
                FROM cdp.events AS e
                WHERE e.profile_id IS NOT NULL AND e.seq <= 42
                GROUP BY e.profile_id
                """)
        #expect(
            try compiler.computedObjectSQL().inlined().sql
                == "jsonb_build_object('big_orders_30d'::text, a.t0, 'favourite_category'::text, a.t1)")
    }
}
