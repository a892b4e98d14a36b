-- Propensity scores: the likelihood that a profile does a goal event (or, for churn, no event at all) within the next
-- window_days. `tributary predictions propensity` trains a regularized logistic regression on point-in-time examples,
-- validates it on a later period, and publishes it only above the quality bar; every profile seen before the scoring
-- time then gets a probability and its percentile among them.

CREATE TABLE cdp.propensity_models (
    model_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('goal', 'churn')),
    goal_event text,
    window_days integer NOT NULL CHECK (window_days BETWEEN 1 AND 366),
    -- Trained on the features as of validation_cutoff with labels from the window after it; validated beforehand by
    -- a model trained as of training_cutoff and tested on the validation period (the figures below).
    training_cutoff timestamptz NOT NULL,
    validation_cutoff timestamptz NOT NULL,
    training_examples integer NOT NULL,
    training_positives integer NOT NULL,
    validation_examples integer NOT NULL,
    validation_positives integer NOT NULL,
    auc double precision NOT NULL,
    log_loss double precision NOT NULL,
    lift_top_decile double precision,
    -- The published model: feature names, standardization, coefficients, intercept, penalty.
    model jsonb NOT NULL,
    trained_at timestamptz NOT NULL DEFAULT now(),
    duration_ms double precision NOT NULL
);
CREATE INDEX propensity_models_name ON cdp.propensity_models (name, model_id DESC);
COMMENT ON TABLE cdp.propensity_models IS
    'Tributary: every published propensity model: what it predicts, its validation on a later period (AUC, log loss, lift of the top decile) and its coefficients';

CREATE TABLE cdp.profile_propensities (
    profile_id uuid NOT NULL,
    name text NOT NULL,
    model_id bigint NOT NULL REFERENCES cdp.propensity_models,
    probability double precision NOT NULL,
    percentile double precision NOT NULL,
    scored_at timestamptz NOT NULL,
    PRIMARY KEY (profile_id, name)
);
CREATE INDEX profile_propensities_name ON cdp.profile_propensities (name, probability DESC);
COMMENT ON TABLE cdp.profile_propensities IS
    'Tributary: each profile''s propensity per published model: probability of the goal within the window and its percentile (0–100) among the profiles scored';
