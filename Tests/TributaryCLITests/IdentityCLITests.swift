import Foundation
import Postgres
import PostgresTesting
import Testing

/// `tributary identity …` end to end: output, and one-line errors for bad input.
@Suite struct IdentityCLITests {
    let cli = CLITests()

    @Test func identityCommandsResolveExplainRebuildAndRefuseBadInput() async throws {
        try await cli.withDatabaseURL { url in
            let env = ["DATABASE_URL": url]
            let client = PostgresClient(
                configuration: try PostgresConfiguration(connectionString: url), logger: TestDatabase.logger)
            defer { Task { await client.shutdown() } }
            #expect(try await cli.run(["migrate"], environment: env).status == 0)
            let jsonl = FileManager.default.temporaryDirectory.appendingPathComponent("identity-\(UUID()).jsonl")
            try """
            {"type":"page","anonymousId":"a-1","messageId":"m1","timestamp":"2026-11-01T10:00:00Z"}
            {"type":"identify","anonymousId":"a-1","userId":"u-1","traits":{"email":"Jane@Example.com"},"messageId":"m2","timestamp":"2026-11-01T10:01:00Z"}
            {"type":"identify","anonymousId":"a-2","traits":{"email":"jane@example.com "},"messageId":"m3","timestamp":"2026-11-01T10:02:00Z"}
            """.write(to: jsonl, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: jsonl) }
            #expect(try await cli.run(["sources", "create", "crm"], environment: env).status == 0)
            #expect(try await cli.run(["import", jsonl.path, "--source", "crm"], environment: env).status == 0)

            let run = try await cli.run(["identity", "run", "--once"], environment: env)
            #expect(run.status == 0 && run.stdout.contains("3 events stamped"), "\(run.stdout)\(run.stderr)")
            let explain = try await cli.run(["identity", "explain", "email:JANE@example.com"], environment: env)
            #expect(explain.status == 0)
            for part in ["identifiers (4)", "anonymous_id:a-1", "anonymous_id:a-2", "user_id:u-1"] {
                #expect(explain.stdout.contains(part))
            }
            let status = try await cli.run(["identity", "status"], environment: env)
            #expect(
                status.stdout.contains("identity stage at event 3 of 3") && status.stdout.contains("4 identifiers in 1 profiles"))
            // Jane's email also links her user id, so it is no junk suspect.
            let suspects = try await cli.run(["identity", "suspects"], environment: env)
            #expect(suspects.status == 0 && suspects.stdout.contains("no junk suspects"), "\(suspects.stdout)\(suspects.stderr)")
            cli.expectOneLineError(
                try await cli.run(["identity", "suspects", "--limit", "0"], environment: env),
                containing: ["--limit must be at least 1, got 0"])
            let rebuild = try await cli.run(["identity", "rebuild"], environment: env)
            #expect(rebuild.status == 0 && rebuild.stdout.contains("changed: 0 identifiers, 0 event stamps"), "\(rebuild.stdout)")

            cli.expectOneLineError(
                try await cli.run(["identity", "explain", "jane@example.com"], environment: env), containing: ["KIND:VALUE"])
            cli.expectOneLineError(
                try await cli.run(["identity", "explain", "email:nobody@example.com"], environment: env),
                containing: ["no identifier email:nobody@example.com"])
            let bad = FileManager.default.temporaryDirectory.appendingPathComponent("rules-\(UUID()).json")
            defer { try? FileManager.default.removeItem(at: bad) }
            try #"{"limits": {"email": 0}}"#.write(to: bad, atomically: true, encoding: .utf8)
            cli.expectOneLineError(
                try await cli.run(["identity", "rules", "apply", bad.path], environment: env),
                containing: [bad.path, "limits.email: must be at least 1"])
            try #"{"blocked": ["(oops"]}"#.write(to: bad, atomically: true, encoding: .utf8)
            cli.expectOneLineError(
                try await cli.run(["identity", "rules", "apply", bad.path], environment: env),
                containing: ["rules.blocked[0]: '(oops' is not a valid regular expression"])
            cli.expectOneLineError(
                try await cli.run(["identity", "rules", "apply", "/nonexistent.json"], environment: env),
                containing: ["cannot read /nonexistent.json"])
            // Blocking the shared email after the fact splits the profile in two.
            try #"{"blocked": ["^jane@example\\.com$"]}"#.write(to: bad, atomically: true, encoding: .utf8)
            let apply = try await cli.run(["identity", "rules", "apply", bad.path], environment: env)
            #expect(
                apply.status == 0 && apply.stdout.contains("1 newly blocked identifiers removed"),
                "\(apply.stdout)\(apply.stderr)")
            let profiles = try await client.query("SELECT count(DISTINCT profile_id) FROM cdp.identities").scalar(Int.self)
            #expect(profiles == 2)
            let show = try await cli.run(["identity", "rules", "show"], environment: env)
            #expect(show.stdout.contains("jane@example"))
        }
    }
}
