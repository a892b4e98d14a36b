-- The Citus stand-in (`tributary migrate --distribution standin`, for tests on plain PostgreSQL): a table Citus would
-- distribute becomes a table hash-partitioned by its distribution column. PostgreSQL then refuses what Citus refuses
-- about keys: a primary key or unique constraint that does not include the column. Applied by the migrator in that
-- mode only (this directory is not re-applied with sql/).

CREATE OR REPLACE FUNCTION cdp.standin_distribute(target regclass, dist_column text, shards int DEFAULT 4)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    schema_name text;
    table_name text;
    old_name text;
    options text[];
    table_comment text;
    nonempty boolean;
    definitions text[] := '{}';
    definition text;
    item record;
BEGIN
    SELECT n.nspname, c.relname, c.reloptions, obj_description(c.oid, 'pg_class')
    INTO schema_name, table_name, options, table_comment
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = target;
    IF (SELECT relkind FROM pg_class WHERE oid = target) = 'p' THEN
        RETURN;  -- already partitioned: done before
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT FROM %s)', target) INTO nonempty;
    IF nonempty THEN
        RAISE EXCEPTION 'the distribution stand-in converts empty tables only, and %.% has rows', schema_name, table_name
            USING HINT = 'use the stand-in on a freshly created database';
    END IF;
    -- Keys, foreign keys and indexes as they are, re-created under the same names on the new table.
    FOR item IN
        SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
        WHERE conrelid = target AND contype IN ('p', 'u', 'f', 'x') ORDER BY contype DESC, conname
    LOOP
        definitions := definitions || format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', schema_name, table_name,
                                             item.conname, item.def);
        EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', target, item.conname, left(item.conname, 50) || '__single');
    END LOOP;
    FOR item IN
        SELECT ic.relname, pg_get_indexdef(i.indexrelid) AS def
        FROM pg_index AS i JOIN pg_class AS ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = target AND NOT EXISTS (SELECT FROM pg_constraint WHERE conindid = i.indexrelid)
        ORDER BY ic.relname
    LOOP
        definitions := definitions || item.def;
        EXECUTE format('ALTER INDEX %I.%I RENAME TO %I', schema_name, item.relname, left(item.relname, 50) || '__single');
    END LOOP;
    -- Foreign keys of other tables pointing here go with the old table; put them back too.
    FOR item IN
        SELECT conrelid::regclass AS source, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
        WHERE confrelid = target AND contype = 'f'
    LOOP
        definitions := definitions || format('ALTER TABLE %s ADD CONSTRAINT %I %s', item.source, item.conname, item.def);
    END LOOP;

    -- Triggers (not copied by LIKE).
    FOR item IN SELECT pg_get_triggerdef(oid) AS def FROM pg_trigger WHERE tgrelid = target AND NOT tgisinternal LOOP
        definitions := definitions || item.def;
    END LOOP;
    -- Views built on the table, directly or through other views (sql/ makes its own again afterwards; these are the
    -- ones migrations made), in an order that creates each after those it reads.
    FOR item IN
        WITH RECURSIVE dependents (view_oid, depth) AS (
            SELECT r.ev_class, 1
            FROM pg_depend AS d JOIN pg_rewrite AS r ON r.oid = d.objid
            WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = target AND r.ev_class <> target
            UNION
            SELECT r.ev_class, dependents.depth + 1
            FROM dependents
            JOIN pg_depend AS d ON d.refobjid = dependents.view_oid AND d.classid = 'pg_rewrite'::regclass
            JOIN pg_rewrite AS r ON r.oid = d.objid
            WHERE r.ev_class <> dependents.view_oid
        )
        SELECT v.oid::regclass AS name, v.relkind, v.reloptions, pg_get_viewdef(v.oid) AS def,
               obj_description(v.oid, 'pg_class') AS description
        FROM (SELECT view_oid, max(depth) AS depth FROM dependents GROUP BY view_oid) AS d
        JOIN pg_class AS v ON v.oid = d.view_oid
        ORDER BY d.depth, v.oid
    LOOP
        definitions := definitions || format('CREATE %sVIEW %s%s AS %s',
                                             CASE WHEN item.relkind = 'm' THEN 'MATERIALIZED ' ELSE '' END, item.name,
                                             CASE WHEN item.reloptions IS NULL THEN ''
                                                  ELSE ' WITH (' || array_to_string(item.reloptions, ', ') || ')' END,
                                             rtrim(item.def, ';'));
        IF item.description IS NOT NULL THEN
            definitions := definitions || format('COMMENT ON %sVIEW %s IS %L',
                                                 CASE WHEN item.relkind = 'm' THEN 'MATERIALIZED ' ELSE '' END, item.name,
                                                 item.description);
        END IF;
    END LOOP;

    old_name := left(table_name, 50) || '__single';
    EXECUTE format('ALTER TABLE %s RENAME TO %I', target, old_name);
    EXECUTE format(
        'CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING GENERATED INCLUDING CONSTRAINTS '
        'INCLUDING COMMENTS INCLUDING STORAGE INCLUDING COMPRESSION) PARTITION BY HASH (%I)',
        schema_name, table_name, schema_name, old_name, dist_column);
    IF table_comment IS NOT NULL THEN
        EXECUTE format('COMMENT ON TABLE %I.%I IS %L', schema_name, table_name, table_comment);
    END IF;
    FOR shard IN 0 .. shards - 1 LOOP
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES WITH (MODULUS %s, REMAINDER %s)%s',
                       schema_name, table_name || '_shard' || shard, schema_name, table_name, shards, shard,
                       CASE WHEN options IS NULL THEN '' ELSE ' WITH (' || array_to_string(options, ', ') || ')' END);
    END LOOP;
    EXECUTE format('DROP TABLE %I.%I CASCADE', schema_name, old_name);
    -- A key without the distribution column fails here, as create_distributed_table would.
    FOREACH definition IN ARRAY definitions LOOP
        EXECUTE definition;
    END LOOP;
END
$$;
COMMENT ON FUNCTION cdp.standin_distribute(regclass, text, int) IS
    'Tributary: the Citus stand-in for tests: an empty table becomes hash-partitioned by its distribution column';
