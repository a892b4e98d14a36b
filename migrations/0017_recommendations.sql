-- Next-best-product recommendations: for each profile, the products it has not bought that are most often viewed,
-- added or bought together with what it interacted with (item-to-item co-occurrence, time-decayed), filled up from
-- the most popular products; the popular products alone for profiles with no product interactions.
-- `tributary predictions recommend` replaces both tables in one transaction.

-- One row per profile (a tenth of the rows and index entries of one row per recommendation, which a run rewrites
-- whole); analysts read cdp.profile_recommendations, one row per recommendation.
CREATE TABLE cdp.profile_recommendation_lists (
    profile_id uuid PRIMARY KEY,
    product_ids text[] NOT NULL,
    scores double precision[] NOT NULL,
    -- 'similar': co-occurrence with the profile's own products; 'popular': the fallback.
    sources text[] NOT NULL,
    computed_at timestamptz NOT NULL,
    CHECK (cardinality(product_ids) = cardinality(scores) AND cardinality(scores) = cardinality(sources))
);
COMMENT ON TABLE cdp.profile_recommendation_lists IS
    'Tributary: each profile''s recommendations as arrays in rank order (read cdp.profile_recommendations)';

CREATE VIEW cdp.profile_recommendations AS
SELECT l.profile_id, r.rank::integer AS rank, r.product_id, l.scores[r.rank] AS score, l.sources[r.rank] AS source,
       l.computed_at
FROM cdp.profile_recommendation_lists AS l
CROSS JOIN LATERAL unnest(l.product_ids) WITH ORDINALITY AS r (product_id, rank);
COMMENT ON VIEW cdp.profile_recommendations IS
    'Tributary: the top products each profile has not bought, ranked (source similar: co-occurrence with its own products; popular: fallback); profiles without product interactions have no rows (see cdp.popular_products)';

CREATE TABLE cdp.popular_products (
    rank integer PRIMARY KEY CHECK (rank >= 1),
    product_id text NOT NULL UNIQUE,
    score double precision NOT NULL,
    computed_at timestamptz NOT NULL
);
COMMENT ON TABLE cdp.popular_products IS
    'Tributary: the most popular products (time-decayed interaction weight): the recommendations of profiles with no product interactions';
