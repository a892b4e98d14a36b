import Foundation
import Postgres
import PostgresTesting
import Testing

/// `tributary syncs …` and `tributary worker` end to end, with one-line errors for bad input.
@Suite struct SyncsCLITests {
    let cli = CLITests()

    @Test func syncCommandsAndTheWorker() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("syncs-cli-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await cli.withDatabaseURL { url in
            let env = ["DATABASE_URL": url]
            let client = PostgresClient(
                configuration: try PostgresConfiguration(connectionString: url), logger: TestDatabase.logger)
            defer { Task { await client.shutdown() } }
            #expect(try await cli.run(["migrate"], environment: env).status == 0)
            try await client.execute("CREATE TABLE customers (id text PRIMARY KEY, email text)")
            try await client.execute("INSERT INTO customers VALUES ('a', 'a@example.com'), ('b', 'b@example.com')")

            let file = directory.appendingPathComponent("syncs.json")
            try
                #"{"syncs": [{"name": "out", "source": {"relation": "customers"}, "primaryKey": ["id"], "fields": {"mail": "emial"}, "destination": {"type": "file", "path": "x"}}]}"#
                .write(to: file, atomically: true, encoding: .utf8)
            cli.expectOneLineError(
                try await cli.run(["syncs", "apply", file.path], environment: env),
                containing: [file.path, "syncs[0].source: reading customers failed: column s.emial does not exist"])
            try """
            {"syncs": [{"name": "out", "source": {"relation": "customers"}, "primaryKey": ["id"], "mode": "mirror",
              "destination": {"type": "file", "path": "\(directory.path)/out-{run}.jsonl"}, "schedule": {"every": "1h"}}]}
            """.write(to: file, atomically: true, encoding: .utf8)
            let apply = try await cli.run(["syncs", "apply", file.path], environment: env)
            #expect(apply.status == 0 && apply.stdout.contains("1 added"), "\(apply.stdout)\(apply.stderr)")
            let dry = try await cli.run(["syncs", "run", "out", "--dry-run"], environment: env)
            #expect(dry.stdout.contains(#"{"op":"upsert","key":{"id":"a"}"#) && dry.stdout.contains("2 added"), "\(dry.stdout)")
            #expect(try await client.query("SELECT count(*) FROM cdp.sync_state").scalar(Int.self) == 0)

            // The worker runs the due sync, then stops on SIGTERM.
            var environment = ProcessInfo.processInfo.environment
            for key in PostgresConfiguration.environmentKeys { environment.removeValue(forKey: key) }
            environment.merge(env) { $1 }
            let log = directory.appendingPathComponent("worker.log").path
            let worker = try ProcessRunner.start(
                CLITests.executable.path, ["worker", "--poll-interval", "1"], environment: environment, logFile: log)
            var delivered = 0
            for _ in 0..<100 where delivered < 2 {
                try await Task.sleep(for: .milliseconds(100))
                delivered = try await client.query("SELECT count(*) FROM cdp.sync_state").scalar(Int.self)
            }
            #expect(delivered == 2)
            kill(worker, SIGTERM)
            #expect(
                ProcessRunner.wait(worker) == 0,
                "graceful shutdown on SIGTERM: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")

            try await client.execute("DELETE FROM customers WHERE id = 'a'")
            let run = try await cli.run(["syncs", "run", "out"], environment: env)
            #expect(run.status == 0 && run.stdout.contains("1 removed; 1 delivered"), "\(run.stdout)\(run.stderr)")
            let status = try await cli.run(["syncs", "status", "out"], environment: env)
            #expect(
                status.stdout.contains("schedule: +2 ~0 -0; 2 delivered")
                    && status.stdout.contains("manual: +0 ~0 -1; 1 delivered"), "\(status.stdout)")
            let list = try await cli.run(["syncs", "list"], environment: env)
            #expect(list.stdout.contains("out  mirror → file  1 rows delivered, 0 errors"), "\(list.stdout)")
            let sql = try await cli.run(["syncs", "show", "out", "--sql"], environment: env)
            #expect(
                sql.stdout.contains("FROM cdp.sync_state WHERE sync = 'out') AS st")
                    && sql.stdout.contains("FROM cdp.sync_pending WHERE sync = 'out') AS p"), "\(sql.stdout)")
            cli.expectOneLineError(
                try await cli.run(["syncs", "run", "nope"], environment: env), containing: ["no sync named 'nope'"])
            // Every run's rows with their outcomes; nothing was refused, so nothing to replay.
            let runID = try await client.query("SELECT max(run_id) FROM cdp.sync_runs WHERE trigger = 'manual'").scalar(Int.self)
            let rows = try await cli.run(["syncs", "status", "out", "--run", "\(runID)"], environment: env)
            #expect(rows.stdout.contains(#"{"id": "a"} delete: delivered"#), "\(rows.stdout)\(rows.stderr)")
            let replay = try await cli.run(["syncs", "replay", "out"], environment: env)
            #expect(
                replay.status == 0 && replay.stdout.contains("nothing to replay: no run of out has rejected or failed rows"),
                "\(replay.stdout)\(replay.stderr)")
            cli.expectOneLineError(
                try await cli.run(["syncs", "replay", "out", "--run", "99999"], environment: env),
                containing: ["sync 'out' has no run 99999"])
        }
    }
}
