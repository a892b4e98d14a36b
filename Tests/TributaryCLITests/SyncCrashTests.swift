import Foundation
import Postgres
import PostgresTesting
import Testing

/// `kill -9` of `tributary syncs run` while a batch is in flight: nothing unconfirmed counts as delivered, the run
/// left `running` is marked `abandoned` by the next run, which sends exactly what was not confirmed.
@Suite struct SyncCrashTests {
    let cli = CLITests()

    @Test(.timeLimit(.minutes(6)))
    func killDashNineMidBatchLosesNothingAndResendsOnlyTheUnconfirmed() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sync-crash-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let url = client.configuration.resolvedConnectionString
            let env = ["DATABASE_URL": url]
            #expect(try await cli.run(["migrate"], environment: env).status == 0)
            try await client.execute("CREATE TABLE public.customers (id text PRIMARY KEY, email text, plan text)")
            for n in 1...12 {
                try await client.execute(
                    "INSERT INTO public.customers VALUES (\(String(format: "c%02d", n)), \("u\(n)@example.com"), 'pro')")
            }
            // The destination table: a write once it holds 6 rows (after two batches of 3) waits for advisory lock 4242,
            // which the test holds; every committed write is logged (a rolled-back one is not).
            try await client.execute("CREATE SCHEMA crm")
            try await client.execute("CREATE TABLE crm.contacts (id text PRIMARY KEY, mail text, tier text)")
            try await client.execute("CREATE TABLE crm.writes (n bigint GENERATED ALWAYS AS IDENTITY, id text, op text)")
            try await client.execute(
                PostgresQuery(
                    unsafeSQL: """
                        CREATE FUNCTION crm.gate() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN
                            IF (SELECT count(*) FROM crm.contacts) >= 6 THEN PERFORM pg_advisory_xact_lock(4242); END IF;
                            RETURN NEW;
                        END $$
                        """))
            try await client.execute(
                PostgresQuery(
                    unsafeSQL: """
                        CREATE FUNCTION crm.log() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN
                            INSERT INTO crm.writes (id, op) VALUES (coalesce(NEW.id, OLD.id), TG_OP);
                            RETURN NULL;
                        END $$
                        """))
            try await client.execute(
                "CREATE TRIGGER gate BEFORE INSERT OR UPDATE ON crm.contacts FOR EACH ROW EXECUTE FUNCTION crm.gate()")
            try await client.execute(
                "CREATE TRIGGER log AFTER INSERT OR UPDATE OR DELETE ON crm.contacts FOR EACH ROW EXECUTE FUNCTION crm.log()")

            let file = directory.appendingPathComponent("syncs.json")
            try """
            {"syncs": [{"name": "crash", "source": {"relation": "public.customers"}, "primaryKey": ["id"],
              "fields": {"mail": "email", "tier": "plan"}, "mode": "mirror", "batchSize": 3,
              "destination": {"type": "postgres", "table": "crm.contacts"}}]}
            """.write(to: file, atomically: true, encoding: .utf8)
            let apply = try await cli.run(["syncs", "apply", file.path], environment: env)
            #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")

            func one(_ sql: String) async throws -> Int {
                try await client.query(PostgresQuery(unsafeSQL: sql)).first![0].decode(Int.self)
            }
            let thisDatabase = "(SELECT oid FROM pg_database WHERE datname = current_database())"

            // Hold the gate, start the run, wait until its third batch waits at the gate, kill -9 it.
            let gate = try await PostgresConnection.connect(configuration: client.configuration, logger: TestDatabase.logger)
            try await gate.execute("SELECT pg_advisory_lock(4242)")
            var environment = ProcessInfo.processInfo.environment
            for key in PostgresConfiguration.environmentKeys { environment.removeValue(forKey: key) }
            environment.merge(env) { $1 }
            let log = directory.appendingPathComponent("run.log").path
            let child = try ProcessRunner.start(
                CLITests.executable.path, ["syncs", "run", "crash"], environment: environment, logFile: log)
            var waiting = 0
            for _ in 0..<300 where waiting == 0 {
                try await Task.sleep(for: .milliseconds(50))
                waiting = try await one(
                    "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = \(thisDatabase)"
                )
            }
            #expect(
                waiting == 1,
                "the run never reached its third batch: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            kill(child, SIGKILL)
            let exit = ProcessRunner.wait(child)
            #expect(exit == 128 + SIGKILL)
            try await gate.execute("SELECT pg_advisory_unlock(4242)")
            await gate.close()
            // The dead worker's sessions end: its in-flight transaction rolls back, its sync lock goes with it.
            var busy = -1
            for _ in 0..<200 where busy != 0 {
                try await Task.sleep(for: .milliseconds(50))
                busy = try await one(
                    """
                    SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = \(thisDatabase))::int
                         + (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
                            AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)'))::int
                    """)
            }
            #expect(busy == 0, "the killed worker's sessions did not end")

            // Two batches were confirmed, and only they: the state, the table and the write log agree.
            #expect(try await one("SELECT count(*)::int FROM cdp.sync_state") == 6)
            #expect(try await one("SELECT count(*)::int FROM crm.contacts") == 6)
            #expect(
                try await one(
                    """
                    SELECT count(*)::int FROM cdp.sync_state AS s JOIN crm.contacts AS c ON s.key_object ->> 'id' = c.id
                    WHERE s.payload = jsonb_build_object('mail', c.mail, 'tier', c.tier)
                    """) == 6)
            let before = Set(try await client.query("SELECT id FROM crm.writes").map { try $0[0].decode(String.self) })
            let lastWrite = try await one("SELECT coalesce(max(n), 0)::int FROM crm.writes")
            #expect(before.count == 6)
            let crashed = try await client.query("SELECT status FROM cdp.sync_runs ORDER BY run_id").map {
                try $0[0].decode(String.self)
            }
            #expect(crashed == ["running"])

            // The next run completes, marks the dead one abandoned, and writes only the rows not confirmed before.
            let next = try await cli.run(["syncs", "run", "crash"], environment: env)
            #expect(
                next.status == 0 && next.stdout.contains(": succeeded;") && next.stdout.contains("6 delivered"),
                "\(next.stdout)\(next.stderr)")
            let runs = try await client.query("SELECT status FROM cdp.sync_runs ORDER BY run_id").map {
                try $0[0].decode(String.self)
            }
            #expect(runs == ["abandoned", "succeeded"])
            let after = try await client.query("SELECT id FROM crm.writes WHERE n > \(lastWrite)").map {
                try $0[0].decode(String.self)
            }
            #expect(Set(after).isDisjoint(with: before), "rows confirmed before the crash were written again: \(after)")
            #expect(after.count == 6 && Set(after).union(before) == Set((1...12).map { String(format: "c%02d", $0) }), "\(after)")
            let source = try await client.query("SELECT id || email || plan FROM public.customers ORDER BY id").map {
                try $0[0].decode(String.self)
            }
            let target = try await client.query("SELECT id || mail || tier FROM crm.contacts ORDER BY id").map {
                try $0[0].decode(String.self)
            }
            #expect(source == target)
        }
    }
}
