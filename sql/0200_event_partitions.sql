-- Monthly partitions of cdp.events, created ahead of time by `tributary migrate` and `tributary serve`, and on
-- demand for months a batch needs (historical imports). Re-applied after every migrate.

CREATE OR REPLACE FUNCTION cdp.ensure_event_partition(month_start date) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    first_day date := date_trunc('month', month_start)::date;
    partition_name text := 'events_' || to_char(first_day, 'YYYY_MM');
    standin boolean := coalesce((SELECT value #>> '{}' FROM cdp.settings WHERE key = 'distribution'), '') = 'standin';
BEGIN
    IF to_regclass(format('cdp.%I', partition_name)) IS NULL THEN
        -- Serialize creators: two sessions creating the same partition would otherwise collide.
        PERFORM pg_advisory_xact_lock(hashtext('tributary.event_partitions'));
        IF to_regclass(format('cdp.%I', partition_name)) IS NULL THEN
            -- The catalog lookup above can miss a partition another session committed while we waited for the
            -- lock (an advisory lock does not refresh catalog caches), so a duplicate here means it exists: done.
            BEGIN
                EXECUTE format('CREATE TABLE cdp.%I PARTITION OF cdp.events FOR VALUES FROM (%L) TO (%L)%s',
                               partition_name, first_day::timestamp AT TIME ZONE 'UTC',
                               (first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC',
                               CASE WHEN standin THEN ' PARTITION BY HASH (message_id)' ELSE '' END);
                -- The Citus stand-in (tests): each month hash-partitioned by the distribution column, as Citus
                -- shards it. (Under Citus itself, a partition of the distributed cdp.events is distributed with it.)
                FOR shard IN 0 .. CASE WHEN standin THEN 3 ELSE -1 END LOOP
                    EXECUTE format('CREATE TABLE cdp.%I PARTITION OF cdp.%I FOR VALUES WITH (MODULUS 4, REMAINDER %s)',
                                   partition_name || '_shard' || shard, partition_name, shard);
                END LOOP;
            EXCEPTION WHEN duplicate_table THEN
                NULL;
            END;
        END IF;
    END IF;
    RETURN partition_name;
END
$$;
COMMENT ON FUNCTION cdp.ensure_event_partition(date) IS
    'Tributary: creates the monthly partition of cdp.events holding the given day, if missing; returns its name';

CREATE OR REPLACE FUNCTION cdp.ensure_event_partitions(months_back int DEFAULT 1, months_ahead int DEFAULT 3)
RETURNS SETOF text
LANGUAGE sql
AS $$
    SELECT cdp.ensure_event_partition((date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => m))::date)
    FROM generate_series(-months_back, months_ahead) AS m
$$;
COMMENT ON FUNCTION cdp.ensure_event_partitions(int, int) IS
    'Tributary: makes sure monthly partitions exist from months_back before the current month to months_ahead after it';

SELECT count(*) FROM cdp.ensure_event_partitions();
