import Foundation
import Postgres
import PostgresTesting
import Testing

/// `tributary segments apply|list|show|preview|refresh` end to end, with one-line errors for bad input.
@Suite struct SegmentsCLITests {
    let cli = CLITests()

    @Test func segmentCommands() async throws {
        try await cli.withDatabaseURL { url in
            let env = ["DATABASE_URL": url]
            let client = PostgresClient(
                configuration: try PostgresConfiguration(connectionString: url), logger: TestDatabase.logger)
            defer { Task { await client.shutdown() } }
            #expect(try await cli.run(["migrate"], environment: env).status == 0)
            let jsonl = FileManager.default.temporaryDirectory.appendingPathComponent("segments-\(UUID()).jsonl")
            try """
            {"type":"identify","userId":"u-1","traits":{"plan":"pro","email":"a@example.com"},"messageId":"m1","timestamp":"2026-11-01T10:00:00Z"}
            {"type":"track","userId":"u-1","event":"Order Completed","properties":{"revenue":120.5},"messageId":"m2","timestamp":"2026-11-01T10:01:00Z"}
            {"type":"identify","userId":"u-2","traits":{"plan":"free"},"messageId":"m3","timestamp":"2026-10-01T10:00:00Z"}
            """.write(to: jsonl, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: jsonl) }
            #expect(try await cli.run(["sources", "create", "crm"], environment: env).status == 0)
            #expect(try await cli.run(["import", jsonl.path, "--source", "crm"], environment: env).status == 0)
            #expect(try await cli.run(["identity", "run", "--once"], environment: env).status == 0)
            #expect(try await cli.run(["profiles", "run", "--once"], environment: env).status == 0)

            let file = FileManager.default.temporaryDirectory.appendingPathComponent("segments-\(UUID()).json")
            defer { try? FileManager.default.removeItem(at: file) }
            try #"{"segments": [{"name": "pro", "conditions": [{"trait": "plan", "op": ">", "value": "pro"}]}]}"#
                .write(to: file, atomically: true, encoding: .utf8)
            cli.expectOneLineError(
                try await cli.run(["segments", "apply", file.path], environment: env),
                containing: [
                    file.path, "segments[0].conditions[0].value: operator '>' needs a number or an ISO 8601 timestamp, got 'pro'",
                ])
            try #"""
            {"segments": [
              {"name": "pro", "fields": [{"name": "email", "trait": "email"}], "conditions": [{"trait": "plan", "op": "=", "value": "pro"}]},
              {"name": "buyers", "conditions": [{"event": {"name": "Order Completed"}, "aggregate": "sum", "property": "revenue", "op": ">", "value": 100}]}
            ]}
            """#.write(to: file, atomically: true, encoding: .utf8)
            let dryRun = try await cli.run(["segments", "apply", "--dry-run", file.path], environment: env)
            #expect(dryRun.status == 0, "\(dryRun.stderr)")
            #expect(
                dryRun.stdout.contains("added pro: 1 profiles")
                    && dryRun.stdout.contains("+ WHERE p.traits -> 'plan' = '\"pro\"'::jsonb"),
                "\(dryRun.stdout)")
            #expect(
                try await client.query("SELECT count(*) FROM cdp.segment_definitions").scalar(Int.self) == 0,
                "a dry run changes nothing")

            let apply = try await cli.run(["segments", "apply", file.path], environment: env)
            #expect(
                apply.status == 0 && apply.stdout.contains("2 added") && apply.stdout.contains("2 entered"),
                "\(apply.stdout)\(apply.stderr)")
            let list = try await cli.run(["segments", "list"], environment: env)
            #expect(list.stdout.contains("pro") && list.stdout.contains("1 members"), "\(list.stdout)")
            let sql = try await cli.run(["segments", "show", "buyers", "--sql"], environment: env)
            #expect(
                sql.stdout.contains(#"CREATE OR REPLACE VIEW "segments"."buyers" AS"#)
                    && sql.stdout.contains("e.profile_id = p.profile_id"),
                "\(sql.stdout)")
            let preview = try await cli.run(["segments", "preview", "pro"], environment: env)
            #expect(
                preview.stdout.contains(#""email": "a@example.com""#) && preview.stdout.contains("pro: 1 profiles now"),
                "\(preview.stdout)")

            // Changing one segment and dropping the other: the diff shows it, then exits are recorded.
            try #"{"segments": [{"name": "pro", "conditions": [{"trait": "plan", "op": "in", "value": ["pro", "free"]}]}]}"#
                .write(to: file, atomically: true, encoding: .utf8)
            let change = try await cli.run(["segments", "apply", "--dry-run", file.path], environment: env)
            #expect(
                change.stdout.contains("changed pro: 1 → 2 profiles (+1); 1 members stored")
                    && change.stdout.contains("removed buyers"),
                "\(change.stdout)")
            #expect(
                change.stdout.contains("-        nullif(p.traits -> 'email', 'null'::jsonb) AS \"email\""), "\(change.stdout)")
            #expect(try await cli.run(["segments", "apply", file.path], environment: env).status == 0)
            let changes = try await client.query(
                """
                SELECT segment || ':' || change || ':' || reason FROM cdp.segment_changes ORDER BY change_id
                """
            ).map { try $0[0].decode(String.self) }
            #expect(
                changes == ["pro:entered:refresh", "buyers:entered:refresh", "buyers:exited:removed", "pro:entered:refresh"],
                "\(changes)")
            #expect(try await client.query("SELECT count(*) FROM pg_views WHERE schemaname = 'segments'").scalar(Int.self) == 1)

            cli.expectOneLineError(
                try await cli.run(["segments", "show", "nope"], environment: env), containing: ["no segment named nope"])
            cli.expectOneLineError(
                try await cli.run(["segments", "refresh", "nope"], environment: env), containing: ["no segment named nope"])
            let refresh = try await cli.run(["segments", "refresh"], environment: env)
            #expect(
                refresh.stdout.contains("1 refreshed") && refresh.stdout.contains("0 entered, 0 exited, 2 members"),
                "\(refresh.stdout)")
        }
    }
}
