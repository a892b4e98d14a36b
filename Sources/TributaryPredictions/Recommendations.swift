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

/// Next-best-product recommendations, computed set-based in PostgreSQL.
///
/// 1. Interactions: each profile's interest in each product, the sum of its events' weights decayed with their age
///    (half-life), and whether it bought the product; at most the 50 strongest products per profile take part in
///    co-occurrence (so a bot that viewed everything costs no more than a customer).
/// 2. Similarity of products i and j: Σ over profiles of min(interest in i, interest in j), divided by the geometric
///    mean of their total interest (a cosine-like normalization, so popular products do not dominate); the 50 most
///    similar kept per product.
/// 3. A profile's score of a product it has not bought: Σ over its products i of interest(i) × similarity(i, j); its
///    top N, filled up with the most popular products it has not bought.
public struct Recommendations: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
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
        _ settings: RecommendationSettings = RecommendationSettings(), asOf: Date = Date()
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
            try await tx.execute(
                """
                CREATE TEMP TABLE tributary_basket ON COMMIT DROP AS
                SELECT profile_id, product, interest FROM (
                    SELECT profile_id, product, interest,
                           row_number() OVER (PARTITION BY profile_id ORDER BY interest DESC, product) AS position
                    FROM pg_temp.tributary_interactions
                ) AS ranked
                WHERE position <= 50
                """)
            try await tx.execute("ANALYZE pg_temp.tributary_basket")
            try await tx.execute(
                """
                CREATE TEMP TABLE tributary_similar ON COMMIT DROP AS
                WITH totals AS (SELECT product, sum(interest) AS total FROM pg_temp.tributary_basket GROUP BY product),
                pairs AS (
                    SELECT a.product AS i, b.product AS j, sum(least(a.interest, b.interest)) AS together
                    FROM pg_temp.tributary_basket AS a
                    JOIN pg_temp.tributary_basket AS b ON b.profile_id = a.profile_id AND b.product <> a.product
                    GROUP BY a.product, b.product
                )
                SELECT i, j, similarity FROM (
                    SELECT p.i, p.j, p.together / sqrt(ti.total * tj.total) AS similarity,
                           row_number() OVER (PARTITION BY p.i ORDER BY p.together / sqrt(ti.total * tj.total) DESC, p.j)
                               AS position
                    FROM pairs AS p JOIN totals AS ti ON ti.product = p.i JOIN totals AS tj ON tj.product = p.j
                ) AS ranked
                WHERE position <= 50
                """)
            try await tx.execute("ANALYZE pg_temp.tributary_similar")
            try await tx.execute("DELETE FROM cdp.popular_products")
            try await tx.execute(
                """
                INSERT INTO cdp.popular_products (rank, product_id, score, computed_at)
                SELECT row_number() OVER (ORDER BY score DESC, product), product, score, \(asOf)
                FROM (SELECT product, sum(interest) AS score FROM pg_temp.tributary_interactions GROUP BY product
                      ORDER BY score DESC, product LIMIT \(settings.top * 5)) AS popular
                """)
            try await tx.execute("DELETE FROM cdp.profile_recommendations")
            let rows =
                try await tx.execute(
                    """
                    INSERT INTO cdp.profile_recommendations (profile_id, rank, product_id, score, source, computed_at)
                    SELECT profile_id, position, product, score, source, \(asOf) FROM (
                        SELECT profile_id, product, score, source,
                               row_number() OVER (PARTITION BY profile_id ORDER BY preference, score DESC, product) AS position
                        FROM (
                            -- A product both similar and popular counts once, as similar.
                            SELECT DISTINCT ON (profile_id, product) profile_id, product, score, preference, source
                            FROM (
                                SELECT b.profile_id, s.j AS product, sum(b.interest * s.similarity) AS score,
                                       0 AS preference, 'similar' AS source
                                FROM pg_temp.tributary_basket AS b
                                JOIN pg_temp.tributary_similar AS s ON s.i = b.product
                                GROUP BY b.profile_id, s.j
                                UNION ALL
                                SELECT c.profile_id, p.product_id, p.score, 1, 'popular'
                                FROM (SELECT DISTINCT profile_id FROM pg_temp.tributary_interactions) AS c
                                CROSS JOIN (SELECT product_id, score FROM cdp.popular_products
                                            WHERE rank <= \(settings.top * 2)) AS p
                            ) AS candidates
                            WHERE NOT EXISTS (
                                SELECT 1 FROM pg_temp.tributary_interactions AS x
                                WHERE x.profile_id = candidates.profile_id AND x.product = candidates.product AND x.bought)
                            ORDER BY profile_id, product, preference
                        ) AS distinct_candidates
                    ) AS ranked
                    WHERE position <= \(settings.top)
                    """) ?? 0
            let (profiles, products, pairs) = try await tx.query(
                """
                SELECT (SELECT count(DISTINCT profile_id) FROM cdp.profile_recommendations),
                       (SELECT count(DISTINCT product) FROM pg_temp.tributary_interactions),
                       (SELECT count(*) FROM pg_temp.tributary_similar)
                """
            ).first!.decode((Int, Int, Int).self)
            logger.info(
                "predictions: recommendations computed",
                metadata: [
                    "profiles": "\(profiles)", "rows": "\(rows)", "products": "\(products)", "pairs": "\(pairs)",
                    "ms": "\((ContinuousClock.now - started).milliseconds)",
                ])
            return Report(profiles: profiles, rows: rows, products: products, pairs: pairs)
        }
    }
}
