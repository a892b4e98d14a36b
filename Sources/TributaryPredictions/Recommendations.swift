import Foundation
import Logging
import Postgres
import TributaryModel

/// What the next-best-product recommendations are computed from.
public struct RecommendationSettings: Sendable, Equatable {
    /// The events that count as interest in a product, with their weights (a purchase says more than a view).
    public var events: [String: Double]
    /// The event that makes a product "bought" (never recommended to that profile again).
    public var purchaseEvent: String
    /// The property naming the product: read from the event's properties, and from each element of its
    /// `properties.products` array (Segment's e-commerce spec puts an order's products there).
    public var productProperty: String
    /// An interaction loses half its weight every this many days.
    public var halfLifeDays: Double
    /// Interactions older than this many days are ignored.
    public var lookbackDays: Int
    /// Recommendations per profile.
    public var top: Int

    public init(
        events: [String: Double] = ["Product Viewed": 1, "Product Added": 3, "Order Completed": 5],
        purchaseEvent: String = "Order Completed", productProperty: String = "product_id", halfLifeDays: Double = 30,
        lookbackDays: Int = 365, top: Int = 10
    ) {
        self.events = events
        self.purchaseEvent = purchaseEvent
        self.productProperty = productProperty
        self.halfLifeDays = halfLifeDays
        self.lookbackDays = lookbackDays
        self.top = top
    }

    /// Refuses settings that cannot give recommendations, naming the setting.
    public func validate() throws {
        if events.isEmpty { throw PredictionError("recommendations: no interaction events given") }
        for (event, weight) in events where !(weight.isFinite && weight > 0) || event.isEmpty {
            throw PredictionError("recommendations: event '\(event)' has weight \(weight); weights must be more than 0")
        }
        if productProperty.isEmpty { throw PredictionError("recommendations: the product property is empty") }
        if !(halfLifeDays.isFinite && halfLifeDays > 0) {
            throw PredictionError("recommendations: half-life \(halfLifeDays) days; it must be more than 0")
        }
        if !(1...3660).contains(lookbackDays) {
            throw PredictionError("recommendations: lookback \(lookbackDays) days; it must be 1 to 3660")
        }
        if !(1...100).contains(top) { throw PredictionError("recommendations: top \(top); it must be 1 to 100") }
    }
}

/// Next-best-product recommendations: the interactions set-based in PostgreSQL, co-occurrence and ranking over them
/// in Swift.
///
/// 1. Interactions (SQL, one `GROUP BY` over the events): each profile's interest in each product, the sum of its
///    events' weights decayed with their age (half-life), and whether it bought the product; at most the 50 strongest
///    products per profile take part in co-occurrence (so a bot that viewed everything costs no more than a customer).
///    They are streamed out once, by profile, with products as integers.
/// 2. Similarity of products i and j (``ItemSimilarity``): Σ over profiles of min(interest in i, interest in j),
///    divided by the geometric mean of their total interest (a cosine-like normalization, so popular products do not
///    dominate); the 50 most similar kept per product. The same figures as the SQL self-join the tests check it
///    against, at a tenth of its time.
/// 3. A profile's score of a product it has not bought: Σ over its products i of interest(i) × similarity(i, j); its
///    top N, filled up with the most popular products it has not bought.
public struct Recommendations: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// When the recommendations in force were computed (their `asOf`); nil if they never were.
    public func computedAt() async throws -> Date? {
        try await client.withConnection {
            try await $0.query("SELECT max(computed_at) FROM cdp.popular_products").scalar(Date?.self)
        }
    }

    /// What a run wrote.
    public struct Report: Sendable, Equatable {
        /// Profiles with recommendations, and rows written.
        public var profiles: Int
        public var rows: Int
        /// Distinct products with interactions, and similar pairs kept.
        public var products: Int
        public var pairs: Int
    }

    /// Computes every profile's recommendations from events before `asOf` and replaces `cdp.profile_recommendations`
    /// and `cdp.popular_products`, in one transaction.
    @discardableResult
    public func compute(
        _ settings: RecommendationSettings = RecommendationSettings(), asOf: Date = Date(),
        progress: (@Sendable (String) -> Void)? = nil
    ) async throws
        -> Report
    {
        try settings.validate()
        let started = ContinuousClock.now
        let events = settings.events.keys.sorted()
        let weights = events.map { String(settings.events[$0]!) }
        let since = asOf.addingTimeInterval(-Double(settings.lookbackDays) * 86_400)
        let property = settings.productProperty
        return try await client.withTransaction { tx in
            var timings = StepTimings(report: progress)
            try await tx.advisoryTransactionLock(CustomerBasePredictions.lock)
            try await tx.execute("SET LOCAL work_mem = '256MB'")
            try await tx.execute(
                """
                CREATE TEMP TABLE tributary_interactions ON COMMIT DROP AS
                SELECT e.profile_id, x.product,
                       sum((\(weights)::float8[])[array_position(\(events)::text[], e.event)]
                           * exp(-ln(2) * extract(epoch FROM \(asOf) - e.timestamp) / 86400 / \(settings.halfLifeDays)))
                           AS interest,
                       bool_or(e.event = \(settings.purchaseEvent)) AS bought
                FROM cdp.events AS e
                CROSS JOIN LATERAL (
                    SELECT e.properties ->> \(property)
                    UNION ALL
                    SELECT p.item ->> \(property)
                    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(e.properties -> 'products') = 'array'
                                                   THEN e.properties -> 'products' ELSE '[]' END) AS p (item)
                ) AS x (product)
                WHERE e.event = ANY(\(events)::text[]) AND e.type = 'track' AND e.profile_id IS NOT NULL
                  AND e.timestamp < \(asOf) AND e.timestamp >= \(since) AND x.product IS NOT NULL AND x.product <> ''
                GROUP BY e.profile_id, x.product
                """)
            try await tx.execute("ANALYZE pg_temp.tributary_interactions")
            timings.mark("interest")
            // Products as small integers (in name order, so ties break by name).
            try await tx.execute(
                """
                CREATE TEMP TABLE tributary_products ON COMMIT DROP AS
                SELECT product, (row_number() OVER (ORDER BY product) - 1)::int AS id, total
                FROM (SELECT product, sum(interest) AS total FROM pg_temp.tributary_interactions GROUP BY product) AS p
                """)
            try await tx.execute("DELETE FROM cdp.popular_products")
            try await tx.execute(
                """
                INSERT INTO cdp.popular_products (rank, product_id, score, computed_at)
                SELECT row_number() OVER (ORDER BY total DESC, id), product, total, \(asOf)
                FROM (SELECT product, id, total FROM pg_temp.tributary_products ORDER BY total DESC, id
                      LIMIT \(settings.top * 5)) AS popular
                """)
            let names = try await tx.query("SELECT product FROM pg_temp.tributary_products ORDER BY id").map {
                try $0.decode(String.self)
            }
            let popular = try await tx.query(
                """
                SELECT p.id, p.total FROM cdp.popular_products AS x JOIN pg_temp.tributary_products AS p ON p.product = x.product_id
                WHERE x.rank <= \(settings.top * 2) ORDER BY x.rank
                """
            ).map { try $0.decode((Int, Double).self) }
            timings.mark("products")
            // Every interaction streamed out once, by profile, as integers: co-occurrence and ranking run in Swift
            // (a self-join of 14M pairs took 11 s in SQL; summed in memory it takes well under one).
            var interactions = Interactions(products: names.count)
            try await tx.copyOut(
                """
                COPY (SELECT i.profile_id, p.id, i.interest, i.bought
                      FROM pg_temp.tributary_interactions AS i JOIN pg_temp.tributary_products AS p USING (product)
                      ORDER BY i.profile_id) TO STDOUT
                """
            ) { chunk in interactions.consume(chunk) }
            interactions.finish()
            timings.mark("interactions (streamed)")
            let similarity = ItemSimilarity(products: names.count) { visit in
                for profile in 0..<interactions.profileCount {
                    let basket = interactions.basket(profile)
                    visit(interactions.productIDs[basket], interactions.interests[basket])
                }
            }
            let pairs = similarity.pairs
            timings.mark("co-occurrence")
            // Ranking: for each profile, the sum of interest × similarity over its basket, bought products left out,
            // filled up with the popular products.
            var ranker = Ranker(
                neighbours: similarity.neighbours, popular: popular, names: names, top: settings.top,
                computedAt: PostgresTime.format(asOf))
            for profile in 0..<interactions.profileCount { ranker.rank(profile, interactions) }
            ranker.finish()
            timings.mark("ranking")
            try await tx.execute("DELETE FROM cdp.profile_recommendation_lists")
            timings.mark("delete")
            try await tx.copyIn(
                "COPY cdp.profile_recommendation_lists (profile_id, product_ids, scores, sources, computed_at) FROM STDIN"
            ) { writer in
                for text in ranker.output { try await writer.write(text) }
            }
            let rows = ranker.rows
            timings.mark("write")
            let (profiles, products) = (ranker.profiles, names.count)
            logger.info(
                "predictions: recommendations computed",
                metadata: [
                    "profiles": "\(profiles)", "rows": "\(rows)", "products": "\(products)", "pairs": "\(pairs)",
                    "ms": "\((ContinuousClock.now - started).milliseconds)", "steps": "\(timings)",
                ])
            return Report(profiles: profiles, rows: rows, products: products, pairs: pairs)
        }
    }
}

/// Every profile's interactions, read from COPY text (`profile_id, product id, interest, bought`, ordered by
/// profile), each profile's rows sorted by interest (strongest first, ties by product id).
struct Interactions {
    /// The most products per profile that take part in co-occurrence and ranking (the basket).
    static let basketSize = 50
    let products: Int
    /// Profile ids as COPY text, and where each profile's rows start (one more entry than profiles).
    private(set) var profiles: [String] = []
    private(set) var starts: [Int] = [0]
    private(set) var productIDs: [Int32] = []
    private(set) var interests: [Double] = []
    private(set) var bought: [Bool] = []
    private var current: [UInt8] = []

    init(products: Int) { self.products = products }

    var profileCount: Int { profiles.count }

    /// The rows of profile `index`.
    func rows(_ index: Int) -> Range<Int> { starts[index]..<starts[index + 1] }

    /// The strongest ``basketSize`` rows of profile `index`.
    func basket(_ index: Int) -> Range<Int> { starts[index]..<min(starts[index + 1], starts[index] + Self.basketSize) }

    /// Takes a chunk of whole rows.
    mutating func consume(_ chunk: [UInt8]) {
        var start = 0
        for index in chunk.indices where chunk[index] == UInt8(ascii: "\n") {
            line(chunk[start..<index])
            start = index + 1
        }
    }

    private mutating func line(_ bytes: ArraySlice<UInt8>) {
        // profile_id \t id \t interest \t bought, read without a string per field.
        let tab = UInt8(ascii: "\t")
        guard let first = bytes.firstIndex(of: tab) else { return }
        var cursor = first + 1
        var id = 0
        while cursor < bytes.endIndex, bytes[cursor] != tab {
            let digit = Int(bytes[cursor]) - 48
            guard digit >= 0, digit <= 9 else { return }
            id = id * 10 + digit
            cursor += 1
        }
        cursor += 1
        guard cursor < bytes.endIndex, let end = bytes[cursor...].firstIndex(of: tab), id < products,
            let interest = Double(String(decoding: bytes[cursor..<end], as: UTF8.self)), end + 1 < bytes.endIndex
        else { return }
        let profileBytes = bytes[bytes.startIndex..<first]
        if !profileBytes.elementsEqual(current) {
            closeProfile()
            current = Array(profileBytes)
            profiles.append(String(decoding: profileBytes, as: UTF8.self))
        }
        productIDs.append(Int32(id))
        interests.append(interest)
        bought.append(bytes[end + 1] == UInt8(ascii: "t"))
    }

    /// Ends the current profile: its rows sorted strongest first.
    private mutating func closeProfile() {
        guard starts.count == profiles.count else { return }
        let range = starts[starts.count - 1]..<productIDs.count
        if range.count > 1 {
            let sorted = range.map { (productIDs[$0], interests[$0], bought[$0]) }
                .sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
            for (offset, row) in zip(range, sorted) {
                (productIDs[offset], interests[offset], bought[offset]) = row
            }
        }
        starts.append(productIDs.count)
    }

    /// Ends the stream.
    mutating func finish() { closeProfile() }
}

/// Ranks each profile's products and collects the recommendations as COPY text of
/// `cdp.profile_recommendation_lists` (one row per profile, arrays in rank order).
struct Ranker {
    let neighbours: [[ItemSimilarity.Neighbour]]
    let popular: [(Int, Double)]
    /// Product names, escaped for COPY text.
    let names: [String]
    let top: Int
    let computedAt: String
    /// The recommendations, as chunks of COPY text.
    private(set) var output: [String] = []
    private(set) var profiles = 0
    /// Recommendations written (all profiles).
    private(set) var rows = 0
    private var text = ""
    private var bought: [Bool]
    private var scores: [Double]
    private var touched: [Int] = []

    init(
        neighbours: [[ItemSimilarity.Neighbour]], popular: [(Int, Double)], names: [String], top: Int,
        computedAt: String
    ) {
        self.neighbours = neighbours
        self.popular = popular
        // Each name as an element of an array literal, escaped for COPY text.
        self.names = names.map { CopyText.escaped(ArrayLiteral.quoted($0)) }
        self.top = top
        self.computedAt = computedAt
        bought = [Bool](repeating: false, count: names.count)
        scores = [Double](repeating: 0, count: names.count)
    }

    /// Ranks profile `index` of `interactions` and appends its recommendations.
    mutating func rank(_ index: Int, _ interactions: Interactions) {
        let all = interactions.rows(index)
        for row in all where interactions.bought[row] { bought[Int(interactions.productIDs[row])] = true }
        for row in interactions.basket(index) {
            let interest = interactions.interests[row]
            for neighbour in neighbours[Int(interactions.productIDs[row])] {
                if scores[neighbour.product] == 0 { touched.append(neighbour.product) }
                scores[neighbour.product] += interest * neighbour.similarity
            }
        }
        var chosen = touched.filter { !bought[$0] && scores[$0] > 0 }
        chosen.sort { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        var products: [String] = []
        var scoresText: [String] = []
        var sources: [String] = []
        for product in chosen.prefix(top) {
            products.append(names[product])
            scoresText.append("\(scores[product])")
            sources.append("similar")
        }
        let similar = Set(chosen.prefix(top))
        for (product, score) in popular where products.count < top && !bought[product] && !similar.contains(product) {
            products.append(names[product])
            scoresText.append("\(score)")
            sources.append("popular")
        }
        if !products.isEmpty {
            text += "\(interactions.profiles[index])\t{\(products.joined(separator: ","))}\t"
            text += "{\(scoresText.joined(separator: ","))}\t{\(sources.joined(separator: ","))}\t\(computedAt)\n"
            rows += products.count
            profiles += 1
        }
        for product in touched { scores[product] = 0 }
        for row in all { bought[Int(interactions.productIDs[row])] = false }
        touched.removeAll(keepingCapacity: true)
        if text.utf8.count > 256 * 1024 {
            output.append(text)
            text = ""
        }
    }

    /// Ends the ranking: the last chunk.
    mutating func finish() {
        if !text.isEmpty {
            output.append(text)
            text = ""
        }
    }
}
