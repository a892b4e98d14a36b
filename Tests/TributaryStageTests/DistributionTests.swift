import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryModel
@testable import TributaryService

/// The distributed layouts: the plan covers every table, the stand-in enforces Citus's key rule, and the lint finds
/// what Citus refuses.
@Suite struct DistributionTests {
    let files = ProjectFiles(root: TestDatabase.packageRoot)

    @Test func thePlanPlacesEveryTableTheMigrationsCreate() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let report = try await Migrator(files: files, logger: TestDatabase.logger).migrate(client)
            #expect(report.distribution == .single)
            let tables = try await client.query(
                """
                SELECT relname FROM pg_class
                WHERE relnamespace = 'cdp'::regnamespace AND relkind IN ('r', 'p') AND NOT relispartition ORDER BY 1
                """
            ).map { try $0[0].decode(String.self) }
            #expect(tables == DistributionPlan.placements.map(\.table).sorted())
            // Distributed tables never hold a foreign key to anything but a reference table.
            let foreignKeys = try await client.query(
                """
                SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint AS c
                WHERE c.contype = 'f' AND c.connamespace = 'cdp'::regnamespace
                """
            ).map { try $0.decode((String, String).self) }
            for (from, to) in foreignKeys {
                let source = DistributionPlan.placement(of: String(from.dropFirst(4)))!
                let target = DistributionPlan.placement(of: String(to.dropFirst(4)))!
                if source.column != nil || target.kind == .reference {
                    #expect(target.kind == .reference, "\(from) → \(to)")
                }
            }
        }
    }

    @Test func theStandInPartitionsByTheDistributionColumnAndRefusesKeysWithoutIt() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let migrator = Migrator(files: files, logger: TestDatabase.logger)
            let report = try await migrator.migrate(client, distribution: .standin)
            #expect(report.distribution == .standin)
            #expect(report.distributionChanges.contains("cdp.identity_nodes: identity_nodes_pkey is now (node_id, value)"))
            let layout = try await client.query(
                """
                SELECT c.relname, a.attname::text FROM pg_partitioned_table AS p
                JOIN pg_class AS c ON c.oid = p.partrelid
                JOIN pg_attribute AS a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
                WHERE c.relnamespace = 'cdp'::regnamespace AND p.partstrat = 'h' AND NOT c.relispartition
                """
            ).map { try $0.decode((String, String).self) }
            let expected = DistributionPlan.placements.compactMap { placement in
                placement.column.map { (placement.table, $0) }
            }.filter { $0.0 != "events" }
            #expect(Dictionary(uniqueKeysWithValues: layout) == Dictionary(uniqueKeysWithValues: expected))
            // Each month of events is hash-partitioned by message_id.
            let months = try await client.query(
                """
                SELECT count(*), count(*) FILTER (WHERE c.relkind = 'p') FROM pg_inherits AS i
                JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent = 'cdp.events'::regclass
                """
            ).first!.decode((Int, Int).self)
            #expect(months.0 >= 4 && months.0 == months.1)

            // The rule Citus applies, enforced here: a key without the distribution column is refused.
            await #expect(throws: PostgresError.self) {
                try await client.execute("ALTER TABLE cdp.profile_merge_log ADD CONSTRAINT one_merge_id UNIQUE (merge_id)")
            }
            // The product works on it: ingest, dedupe, stamp.
            let (source, _) = try await SourceStore(client: client).create(name: "web")
            let writer = EventWriter(client: client, maxQueuedEvents: 100, logger: TestDatabase.logger) { _, _, _ in }
            let body =
                #"{"batch": [{"type": "identify", "userId": "u-1", "traits": {"email": "a@example.com"}, "messageId": "m1"}]}"#
            let parsed = try SegmentParser(limits: CollectionLimits()).parse(Array(body.utf8), type: nil, receivedAt: Date())
            _ = try await writer.write(parsed.events, sourceID: source.id)
            _ = try await writer.write(parsed.events, sourceID: source.id)
            #expect(try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self) == 1)

            // Idempotent, and the layout is chosen once.
            let again = try await migrator.migrate(client)
            #expect(again.distribution == .standin && again.distributionChanges.isEmpty)
            let error = await #expect(throws: MigrationError.self) { try await migrator.migrate(client, distribution: .single) }
            #expect(error?.description.contains("laid out for --distribution standin") == true)
        }
    }

    @Test func theStandInRefusesADatabaseThatHoldsData() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let migrator = Migrator(files: files, logger: TestDatabase.logger)
            try await migrator.migrate(client)
            let (source, _) = try await SourceStore(client: client).create(name: "web")
            let writer = EventWriter(client: client, maxQueuedEvents: 100, logger: TestDatabase.logger) { _, _, _ in }
            let body = #"{"type": "track", "userId": "u-1", "event": "Kept", "messageId": "m1"}"#
            let parsed = try SegmentParser(limits: CollectionLimits()).parse(Array(body.utf8), type: .track, receivedAt: Date())
            _ = try await writer.write(parsed.events, sourceID: source.id)
            let error = await #expect(throws: (any Error).self) { try await migrator.migrate(client, distribution: .standin) }
            #expect(
                "\(error.map { "\($0)" } ?? "")".contains("has events") || "\(error.map { "\($0)" } ?? "")".contains("has rows"))
            // Nothing was changed: still the single-node layout, the event still there.
            #expect(try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self) == 1)
            #expect(
                try await client.query("SELECT count(*) FROM cdp.settings WHERE key = 'distribution'").scalar(Int.self) == 0)
            let keys = try await client.query(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'identity_nodes_pkey'"
            ).scalar(String.self)
            #expect(keys == "PRIMARY KEY (node_id)")
        }
    }

    /// What Citus's table functions are asked, in what order, checked by stand-ins of those functions that record each
    /// call and refuse what Citus documents it refuses (a key without the distribution column, a foreign key to a table
    /// that is not a reference table, co-location with a table that is not distributed or whose column type differs).
    /// Citus itself cannot be installed here; this checks the calls, not Citus.
    @Test func theCitusLayoutCallsCitusInAnOrderItAccepts() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: files, logger: TestDatabase.logger).migrate(client)
            try await client.withConnection { connection in
                let refused = await #expect(throws: MigrationError.self) {
                    try await Distributor.resolve(requested: .citus, on: connection)
                }
                #expect(refused?.description.contains("CREATE EXTENSION citus") == true)
                try await connection.script(Self.citusFunctions)
                let distributor = Distributor(files: files, logger: TestDatabase.logger)
                let report = try await distributor.apply(.citus, on: connection)
                #expect(report.changes.contains("cdp.events: distributed by message_id"))
                let again = try await distributor.apply(.citus, on: connection)
                #expect(again.changes.isEmpty, "\(again.changes)")
            }
            let calls = try await client.query("SELECT call FROM public.citus_calls ORDER BY n").map {
                try $0[0].decode(String.self)
            }
            #expect(calls.count == DistributionPlan.placements.count)
            #expect(calls.contains("distributed cdp.profile_data by profile_id with cdp.identity_profiles"))
            #expect(calls.contains("distributed cdp.identity_profiles by profile_id with none"))
            #expect(calls.contains("distributed cdp.event_message_ids by message_id with cdp.events"))
            #expect(calls.contains("reference cdp.syncs") && calls.contains("local cdp.audit_log"))
        }
    }

    /// Stand-ins of Citus's catalog and table functions, enforcing the rules Citus documents for them.
    static let citusFunctions = """
        CREATE TABLE public.pg_dist_partition (
            logicalrelid regclass PRIMARY KEY, partmethod "char", partkey text, repmodel "char", colocated regclass);
        CREATE TABLE public.pg_dist_node (groupid int);
        INSERT INTO public.pg_dist_node VALUES (0);
        CREATE TABLE public.citus_calls (n serial, call text);
        CREATE FUNCTION public.foreign_keys_to_non_reference(t regclass) RETURNS boolean LANGUAGE sql AS $$
            SELECT EXISTS (SELECT FROM pg_constraint AS c WHERE c.conrelid = t AND c.contype = 'f'
                           AND NOT EXISTS (SELECT FROM public.pg_dist_partition AS p
                                           WHERE p.logicalrelid = c.confrelid AND p.repmodel = 't'))
        $$;
        CREATE FUNCTION public.create_reference_table(t regclass) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            IF public.foreign_keys_to_non_reference(t) THEN
                RAISE EXCEPTION 'referenced table of % must be a reference table', t;
            END IF;
            INSERT INTO public.pg_dist_partition VALUES (t, 'n', NULL, 't', NULL);
            INSERT INTO public.citus_calls (call) VALUES ('reference ' || t::text);
        END
        $$;
        CREATE FUNCTION public.citus_add_local_table_to_metadata(t regclass) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.pg_dist_partition VALUES (t, 'n', NULL, 's', NULL);
            INSERT INTO public.citus_calls (call) VALUES ('local ' || t::text);
        END
        $$;
        CREATE FUNCTION public.create_distributed_table(t regclass, dist_column text, colocate_with text DEFAULT 'default')
        RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            attribute smallint := (SELECT attnum FROM pg_attribute WHERE attrelid = t AND attname = dist_column);
        BEGIN
            IF attribute IS NULL THEN
                RAISE EXCEPTION 'column % of relation % does not exist', dist_column, t;
            END IF;
            IF EXISTS (SELECT FROM pg_constraint WHERE conrelid = t AND contype IN ('p', 'u') AND attribute <> ALL (conkey)) THEN
                RAISE EXCEPTION 'cannot create constraint on %: keys that do not include the partition column', t;
            END IF;
            IF public.foreign_keys_to_non_reference(t) THEN
                RAISE EXCEPTION 'referenced table of % must be a distributed table or a reference table', t;
            END IF;
            IF colocate_with <> 'none' AND NOT EXISTS (
                SELECT FROM public.pg_dist_partition AS p JOIN pg_attribute AS a
                    ON a.attrelid = p.logicalrelid AND a.attname = p.partkey
                WHERE p.logicalrelid = colocate_with::regclass AND p.partmethod = 'h'
                  AND a.atttypid = (SELECT atttypid FROM pg_attribute WHERE attrelid = t AND attnum = attribute))
            THEN
                RAISE EXCEPTION 'cannot colocate % with %: not distributed, or another column type', t, colocate_with;
            END IF;
            INSERT INTO public.pg_dist_partition VALUES (t, 'h', dist_column, 'c', nullif(colocate_with, 'none')::regclass);
            INSERT INTO public.citus_calls (call)
            VALUES ('distributed ' || t::text || ' by ' || dist_column || ' with ' || colocate_with);
        END
        $$;
        """

    /// The writer's sequence lock is held until COMMIT has returned (on Citus, after the workers' COMMIT PREPARED),
    /// and let go when the transaction fails, so ingestion never stalls on it.
    @Test func theSequenceLockOutlivesTheTransactionAndNotAFailure() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: files, logger: TestDatabase.logger).migrate(client)
            try await client.withConnection { writer in
                try await client.withConnection { other in
                    struct Failed: Error {}
                    await #expect(throws: Failed.self) {
                        try await EventWriter.inOrder(writer) { tx, lock in
                            try await lock.take()
                            #expect(try await other.tryAdvisoryLock(EventWriter.sequenceLock) == false)
                            throw Failed()
                        }
                    }
                    #expect(try await other.tryAdvisoryLock(EventWriter.sequenceLock), "released after the rollback")
                    try await other.advisoryUnlock(EventWriter.sequenceLock)
                    let inside = try await EventWriter.inOrder(writer) { tx, lock in
                        try await lock.take()
                        return try await tx.query(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                        )
                        .scalar(Int.self)
                    }
                    #expect(inside == 1)
                    #expect(try await writer.transactionStatus == .idle)
                    #expect(try await other.tryAdvisoryLock(EventWriter.sequenceLock), "released after the commit")
                    try await other.advisoryUnlock(EventWriter.sequenceLock)
                }
            }
        }
    }

    // MARK: - The lint

    let lint = DistributedSQLLint.forPlan(
        nonImmutable: DistributedSQLLint.builtinNonImmutable.merging(["cdp.identity_profile_id": false]) { $1 })

    func rules(_ sql: String) -> [String] { lint.check(sql).map(\.rule) }

    @Test func theLintFindsWhatCitusRefuses() {
        #expect(
            rules(
                """
                WITH RECURSIVE chain AS (SELECT from_profile_id FROM cdp.profile_merge_log UNION SELECT 1)
                SELECT * FROM chain
                """) == ["recursive CTE"])
        #expect(rules("SELECT * FROM cdp.sync_pending WHERE sync = $1 FOR UPDATE SKIP LOCKED") == ["row lock"])
        #expect(
            rules(
                "INSERT INTO cdp.profile_data (profile_id) VALUES ($1) ON CONFLICT (profile_id) DO UPDATE SET updated_at = now()")
                == ["non-immutable in DO UPDATE"])
        #expect(
            rules(
                """
                INSERT INTO cdp.identity_ignored (reason, kind) VALUES ($1, $2)
                ON CONFLICT (reason, kind) DO UPDATE SET updated_at = now()
                """
            ) == ["non-immutable in DO UPDATE"], "a local table, in Citus's metadata")
        #expect(rules("INSERT INTO pg_temp.x (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = now()").isEmpty)
        #expect(rules("UPDATE cdp.events SET message_id = $1 WHERE seq = $2") == ["distribution column updated"])
        #expect(
            rules("UPDATE cdp.events AS e SET profile_id = $1, message_id = x WHERE seq = $2") == ["distribution column updated"])
        #expect(rules("UPDATE cdp.events SET profile_id = gen_random_uuid()") == ["volatile in modification"])
        #expect(rules("DELETE FROM cdp.sync_state WHERE key = $1 AND random() < 0.5") == ["volatile in modification"])
        #expect(
            rules("UPDATE cdp.profile_data SET updated_at = coalesce(updated_at, now())")
                == ["non-immutable in CASE/COALESCE"])
        #expect(
            rules("UPDATE cdp.sync_state SET delivered_at = date_trunc('minute', delivered_at)") == [
                "stable function of a column"
            ])
        #expect(
            rules(
                "INSERT INTO cdp.segment_members (segment, profile_id) VALUES ($1, (SELECT profile_id FROM cdp.identity_profiles LIMIT 1))"
            )
                == ["subquery in VALUES"])
        #expect(
            rules(
                """
                INSERT INTO cdp.profile_data AS p (profile_id, updated_at) VALUES ($1, now())
                ON CONFLICT (profile_id) DO UPDATE SET updated_at = excluded.updated_at WHERE p.updated_at < excluded.updated_at
                """
            ).isEmpty)
        #expect(
            rules("UPDATE cdp.events AS e SET profile_id = n.profile_id FROM cdp.identity_nodes AS n WHERE n.value = e.user_id")
                == ["non-co-located join"])
        #expect(
            rules("DELETE FROM cdp.segment_members AS m USING cdp.profile_data AS p WHERE p.profile_id = m.profile_id").isEmpty,
            "co-located")
        #expect(
            rules("DELETE FROM cdp.events WHERE message_id IN (SELECT value FROM cdp.identity_nodes)").isEmpty,
            "an uncorrelated subquery is planned on its own")
        // What Citus runs: now() in UPDATE SET without columns, recursion over local tables, comments and strings.
        #expect(rules("UPDATE cdp.profile_data SET updated_at = now() WHERE profile_id = $1").isEmpty)
        #expect(rules("WITH RECURSIVE r AS (SELECT 1 FROM cdp.sync_runs) SELECT * FROM r").isEmpty)
        #expect(rules("SELECT 'WITH RECURSIVE', $$ FOR UPDATE $$ FROM cdp.events -- FOR UPDATE\n").isEmpty)
        #expect(rules("SELECT * FROM cdp.sync_runs FOR UPDATE").isEmpty)
    }
}
