-- The identity graph's epoch: advanced by every statement that changes cdp.identity_nodes, whoever runs it (the
-- identity stage, a rebuild, a rules change's splits, a privacy deletion, an analyst's own SQL). The real-time stage
-- keeps what it learnt of the graph in memory between batches and uses it only while the epoch is where its own last
-- batch left it. A sequence, not a row, so writers never wait on one another for it (a rolled-back change still
-- advances it, which only costs the stage a cache refill).
CREATE SEQUENCE cdp.identity_graph_epoch AS bigint;
COMMENT ON SEQUENCE cdp.identity_graph_epoch IS
    'Tributary: advanced by every statement that changes cdp.identity_nodes (the identity stage''s cache checks it)';

CREATE FUNCTION cdp.identity_graph_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM nextval('cdp.identity_graph_epoch');
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION cdp.identity_graph_changed() IS
    'Tributary: advances cdp.identity_graph_epoch (statement trigger of cdp.identity_nodes)';

CREATE TRIGGER identity_nodes_changed
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdp.identity_nodes
FOR EACH STATEMENT EXECUTE FUNCTION cdp.identity_graph_changed();
