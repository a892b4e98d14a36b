import Foundation
import Postgres
import PostgresTesting
import Testing

/// `tributary traits …` and `tributary profiles run|rebuild|status` end to end, with one-line errors for bad input.
@Suite struct ProfilesCLITests {
    let cli = CLITests()

    @Test func traitsAndProfileStageCommands() async throws {
        try await cli.withDatabaseURL { url in
            let env = ["DATABASE_URL": url]
            let client = PostgresClient(
                configuration: try PostgresConfiguration(connectionString: url), logger: TestDatabase.logger)
            defer { Task { await client.shutdown() } }
            #expect(try await cli.run(["migrate"], environment: env).status == 0)
            let jsonl = FileManager.default.temporaryDirectory.appendingPathComponent("profiles-\(UUID()).jsonl")
            try """
            {"type":"identify","userId":"u-1","traits":{"plan":"pro"},"messageId":"m1","timestamp":"2026-11-01T10:00:00Z"}
            {"type":"track","userId":"u-1","event":"Order Completed","properties":{"revenue":120.5},"messageId":"m2","timestamp":"2026-11-01T10:01:00Z"}
            {"type":"identify","userId":"u-1","traits":{"plan":"free"},"messageId":"m3","timestamp":"2026-10-01T10:00:00Z"}
            """.write(to: jsonl, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: jsonl) }
            #expect(try await cli.run(["sources", "create", "crm"], environment: env).status == 0)
            #expect(try await cli.run(["import", jsonl.path, "--source", "crm"], environment: env).status == 0)
            #expect(try await cli.run(["identity", "run", "--once"], environment: env).status == 0)

            let definitions = FileManager.default.temporaryDirectory.appendingPathComponent("traits-\(UUID()).json")
            defer { try? FileManager.default.removeItem(at: definitions) }
            try #"{"computedTraits": [{"name": "ltv", "aggregate": "sum", "events": ["Order Completed"]}]}"#
                .write(to: definitions, atomically: true, encoding: .utf8)
            cli.expectOneLineError(
                try await cli.run(["traits", "apply", definitions.path], environment: env),
                containing: [definitions.path, "computedTraits[0].property: required for aggregate 'sum'"])
            cli.expectOneLineError(
                try await cli.run(["traits", "apply", "/nonexistent.json"], environment: env),
                containing: ["cannot read /nonexistent.json"])
            try
                #"{"computedTraits": [{"name": "ltv", "aggregate": "sum", "property": "revenue", "events": ["Order Completed"]}]}"#
                .write(to: definitions, atomically: true, encoding: .utf8)
            let dryRun = try await cli.run(["traits", "apply", "--dry-run", definitions.path], environment: env)
            #expect(
                dryRun.status == 0 && dryRun.stdout.contains("sum(cdp.jsonb_numeric(e.properties -> 'revenue'))"),
                "\(dryRun.stdout)")
            #expect(try await client.query("SELECT count(*) FROM cdp.profile_config").scalar(Int.self) == 0)
            let apply = try await cli.run(["traits", "apply", definitions.path], environment: env)
            #expect(apply.status == 0 && apply.stdout.contains("applied 1 traits"), "\(apply.stdout)\(apply.stderr)")
            #expect(try await cli.run(["traits", "apply", definitions.path], environment: env).stdout.contains("unchanged"))

            let run = try await cli.run(["profiles", "run", "--once"], environment: env)
            #expect(run.status == 0 && run.stdout.contains("3 events"), "\(run.stdout)\(run.stderr)")
            let row = try await client.query("SELECT traits->>'plan', ltv FROM cdp.profiles").first!.decode((String, Double).self)
            #expect(row.0 == "pro" && row.1 == 120.5)
            let status = try await cli.run(["profiles", "status"], environment: env)
            #expect(status.stdout.contains("profile stage at event 3 (identity stage at 3)"), "\(status.stdout)")
            let rebuild = try await cli.run(["profiles", "rebuild"], environment: env)
            #expect(
                rebuild.status == 0 && rebuild.stdout.contains("0 profiles changed, 0 trait changes"),
                "\(rebuild.stdout)\(rebuild.stderr)")
            let show = try await cli.run(["traits", "show"], environment: env)
            #expect(show.stdout.contains("\"ltv\""))
            let recompute = try await cli.run(["traits", "recompute", "--time-dependent-only"], environment: env)
            #expect(recompute.status == 0, "\(recompute.stderr)")

            // Predictive traits: a bad one is named; with one buyer nothing can be fitted or trained, which apply
            // reports per trait (the file is applied, the columns exist and are NULL).
            try
                #"{"computedTraits": [{"name": "churn_60d", "kind": "prediction", "predict": "churn", "within": {"days": 60}}, {"name": "alive", "kind": "prediction", "predict": "probability_alive", "top": 3}]}"#
                .write(to: definitions, atomically: true, encoding: .utf8)
            cli.expectOneLineError(
                try await cli.run(["traits", "apply", definitions.path], environment: env),
                containing: ["(prediction 'alive').top: 'probability_alive' takes no top"])
            try
                #"{"computedTraits": [{"name": "ltv", "aggregate": "sum", "property": "revenue", "events": ["Order Completed"]}, {"name": "churn_60d", "kind": "prediction", "predict": "churn", "within": {"days": 60}}, {"name": "alive", "kind": "prediction", "predict": "probability_alive"}]}"#
                .write(to: definitions, atomically: true, encoding: .utf8)
            let predictive = try await cli.run(["traits", "apply", definitions.path], environment: env)
            #expect(predictive.status == 0, "\(predictive.stdout)\(predictive.stderr)")
            #expect(predictive.stdout.contains("predictive trait alive: nothing published: cannot fit"), "\(predictive.stdout)")
            #expect(
                predictive.stdout.contains("predictive trait churn_60d: nothing published: propensity 'churn_60d'"),
                "\(predictive.stdout)")
            let columns = try await client.query("SELECT ltv, alive, churn_60d FROM cdp.profiles").first!.decode(
                (Double, Double?, Double?).self)
            #expect(columns.0 == 120.5 && columns.1 == nil && columns.2 == nil)
            let shown = try await cli.run(["predictions", "show"], environment: env)
            #expect(
                shown.stdout.contains("alive: probability_alive; no fit yet")
                    && shown.stdout.contains("churn_60d: churn within 60 days; no model yet"), "\(shown.stdout)")
        }
    }
}
