import Foundation
import Postgres
import PostgresTesting
import Testing

/// `tributary audit`, `roles` and `retention` end to end: admin actions leave audit entries, bad input is one line.
@Suite struct GovernanceCLITests {
    let cli = CLITests()

    @Test func adminActionsAreAuditedAndPrinted() async throws {
        try await cli.withDatabaseURL { url in
            let env = ["DATABASE_URL": url]
            #expect(try await cli.run(["tokens", "create", "support", "--scope", "admin"], environment: env).status == 0)
            #expect(try await cli.run(["sources", "create", "web"], environment: env).status == 0)
            #expect(try await cli.run(["tokens", "revoke", "support"], environment: env).status == 0)

            let audit = try await cli.run(["audit", "--action", "tokens."], environment: env)
            #expect(audit.status == 0, "\(audit.stderr)")
            let lines = audit.stdout.split(separator: "\n")
            #expect(
                lines.count == 2 && lines[0].contains("tokens.revoke  support") && lines[1].contains("tokens.create  support"),
                "\(audit.stdout)")
            #expect(lines[1].contains("  cli:") && lines[1].contains(#"{"scopes":["admin"]}"#), "\(audit.stdout)")
            #expect(!audit.stdout.contains("trb_"), "no secret in the audit log")
            let all = try await cli.run(["audit", "--limit", "1"], environment: env)
            #expect(all.stdout.split(separator: "\n").count == 1 && all.stdout.contains("tokens.revoke"))
            #expect(
                try await cli.run(["audit", "--action", "sources."], environment: env).stdout.contains("sources.create  web"))
            #expect(
                try await cli.run(["audit", "--action", "nothing."], environment: env).stdout
                    == "no audit entries for actions starting with 'nothing.'\n")
        }
    }

    @Test func rolesAndRetentionCommands() async throws {
        try await cli.withDatabaseURL { url in
            let env = ["DATABASE_URL": url]
            let dry = try await cli.run(["roles", "setup", "--dry-run"], environment: env)
            #expect(
                dry.status == 0 && dry.stdout.contains(#"GRANT SELECT ON ALL TABLES IN SCHEMA "analyst" TO "tributary_analyst";"#)
                    && dry.stdout.hasSuffix("dry run: nothing was changed\n"), "\(dry.stdout)\(dry.stderr)")
            let setup = try await cli.run(["roles", "setup"], environment: env)
            #expect(
                setup.status == 0 && setup.stdout.contains("views of schema analyst: consent, events, identities"),
                "\(setup.stdout)\(setup.stderr)")
            cli.expectOneLineError(
                try await cli.run(["roles", "grant", "no_such_login_x1"], environment: env),
                containing: ["there is no role named 'no_such_login_x1'"])

            #expect(try await cli.run(["retention", "apply"], environment: env).stdout.contains("retention is off"))
            let set = try await cli.run(["retention", "set", "--events", "13months"], environment: env)
            #expect(set.status == 0 && set.stdout == "retention: events are kept for 13 months\n", "\(set.stdout)\(set.stderr)")
            let show = try await cli.run(["retention", "show"], environment: env)
            #expect(
                show.stdout.contains("events: kept for 13 months") && show.stdout.contains("would drop 0 partitions, 0 events"),
                "\(show.stdout)")
            cli.expectOneLineError(
                try await cli.run(["retention", "set", "--events", "13 parsecs"], environment: env),
                containing: ["'13 parsecs': unknown unit 'parsecs'"])
            #expect(
                try await cli.run(["retention", "show"], environment: env).stdout.contains("kept for 13 months"),
                "bad input keeps the setting")
            #expect(try await cli.run(["retention", "set", "--events", "off"], environment: env).stdout.contains("kept forever"))
            let audit = try await cli.run(["audit"], environment: env)
            #expect(audit.stdout.contains("retention.set") && audit.stdout.contains("roles.setup"), "\(audit.stdout)")
        }
    }
}
