-- Next-best-product recommendations: for each profile, the products it has not bought that are most often viewed,
-- added or bought together with what it interacted with (item-to-item co-occurrence, time-decayed), filled up from
-- the most popular products; the popular products alone for profiles with no product interactions.
-- `tributary predictions recommend` replaces both tables in one transaction.

CREATE TABLE cdp.profile_recommendations (
    profile_id uuid NOT NULL,
    rank integer NOT NULL CHECK (rank >= 1),
    product_id text NOT NULL,
    score double precision NOT NULL,
    -- 'similar': co-occurrence with the profile's own products; 'popular': the fallback.
    source text NOT NULL CHECK (source IN ('similar', 'popular')),
    computed_at timestamptz NOT NULL,
    PRIMARY KEY (profile_id, rank)
);
COMMENT ON TABLE cdp.profile_recommendations IS
    'Tributary: the top products each profile has not bought, ranked (source similar: co-occurrence with its own products; popular: fallback); profiles without product interactions have no rows (see cdp.popular_products)';

CREATE TABLE cdp.popular_products (
    rank integer PRIMARY KEY CHECK (rank >= 1),
    product_id text NOT NULL UNIQUE,
    score double precision NOT NULL,
    computed_at timestamptz NOT NULL
);
COMMENT ON TABLE cdp.popular_products IS
    'Tributary: the most popular products (time-decayed interaction weight): the recommendations of profiles with no product interactions';
