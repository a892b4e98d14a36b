-- Predictive traits from the customer-base models (BG/NBD for repeat purchases, Gamma-Gamma for spend; Fader, Hardie
-- & Lee 2005). `tributary predictions fit` fits both by maximum likelihood on every profile's purchases and scores every
-- buyer; `tributary predictions score` scores again with the latest fit. Both tables are for analysts to read.

CREATE TABLE cdp.prediction_fits (
    fit_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model text NOT NULL CHECK (model IN ('customer_base')),
    purchase_event text NOT NULL,
    revenue_property text NOT NULL,
    time_unit_days double precision NOT NULL CHECK (time_unit_days > 0),
    -- The calibration data: purchases from window_start (the first one found) up to window_end (exclusive).
    window_start timestamptz,
    window_end timestamptz NOT NULL,
    customers integer NOT NULL,
    repeat_customers integer NOT NULL,
    -- BG/NBD: purchase rate ~ Gamma(r, alpha); dropout probability ~ Beta(a, b).
    r double precision NOT NULL,
    alpha double precision NOT NULL,
    a double precision NOT NULL,
    b double precision NOT NULL,
    log_likelihood double precision NOT NULL,
    -- Gamma-Gamma (NULL when fewer than 10 customers bought twice with a positive value): spend per purchase.
    p double precision,
    q double precision,
    v double precision,
    spend_log_likelihood double precision,
    -- What the scores of this fit mean: the horizons in days and the annual discount rate of the lifetime value.
    purchases_days integer NOT NULL CHECK (purchases_days > 0),
    lifetime_days integer NOT NULL CHECK (lifetime_days > 0),
    annual_discount_rate double precision NOT NULL CHECK (annual_discount_rate >= 0),
    fitted_at timestamptz NOT NULL DEFAULT now(),
    duration_ms double precision NOT NULL
);
COMMENT ON TABLE cdp.prediction_fits IS
    'Tributary: every fit of the customer-base models (BG/NBD parameters r, alpha, a, b; Gamma-Gamma p, q, v), with its data window and log-likelihood';

CREATE TABLE cdp.profile_predictions (
    profile_id uuid PRIMARY KEY,
    fit_id bigint NOT NULL REFERENCES cdp.prediction_fits,
    -- The model's inputs as of scored_at, in the fit's time unit: repeat purchase days, first to last purchase, first
    -- purchase to scoring, mean value of a repeat purchase day.
    frequency integer NOT NULL,
    recency double precision NOT NULL,
    age double precision NOT NULL,
    monetary_value double precision NOT NULL,
    probability_alive double precision NOT NULL,
    expected_purchases double precision NOT NULL,
    expected_spend double precision,
    predicted_lifetime_value double precision,
    scored_at timestamptz NOT NULL
);
CREATE INDEX profile_predictions_fit ON cdp.profile_predictions (fit_id);
COMMENT ON TABLE cdp.profile_predictions IS
    'Tributary: predictive traits of every profile that has bought: probability alive, expected purchases in the next purchases_days, expected spend per purchase, predicted lifetime value over lifetime_days (see cdp.prediction_fits)';
