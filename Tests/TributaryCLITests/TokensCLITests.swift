import Foundation
import Postgres
import PostgresTesting
import Testing

/// `tributary tokens …` and `tributary profiles show` end to end: output, secrets shown once, one-line errors.
@Suite struct TokensCLITests {
    let cli = CLITests()

    @Test func tokensAreCreatedListedAndRevoked() async throws {
        try await cli.withDatabaseURL { url in
            let env = ["DATABASE_URL": url]
            let create = try await cli.run(
                ["tokens", "create", "support", "--scope", "profiles:read", "--scope", "admin"], environment: env)
            #expect(create.status == 0, "\(create.stderr)")
            let lines = create.stdout.split(separator: "\n")
            let secret = String(lines.last ?? "")
            #expect(secret.hasPrefix("trb_") && secret.count == 47, "\(create.stdout)")
            #expect(create.stdout.contains("created API token 'support'") && create.stdout.contains("profiles:read, admin"))
            #expect(
                try await cli.run(["tokens", "create", "default-scope"], environment: env).stdout.contains(
                    "with scopes profiles:read;"))

            let list = try await cli.run(["tokens", "list"], environment: env)
            #expect(list.status == 0)
            #expect(list.stdout.contains("active   support") && list.stdout.contains(String(secret.prefix(8)) + "…"))
            #expect(!list.stdout.contains(secret), "the list never shows a secret")

            let revoke = try await cli.run(["tokens", "revoke", "support"], environment: env)
            #expect(revoke.status == 0 && revoke.stdout.contains("revoked API token 'support'"))
            let after = try await cli.run(["tokens", "list"], environment: env)
            #expect(
                after.stdout.contains("revoked  support") && after.stdout.contains("active   default-scope"), "\(after.stdout)")

            cli.expectOneLineError(
                try await cli.run(["tokens", "create", "support"], environment: env),
                containing: ["an API token named 'support' already exists"])
            cli.expectOneLineError(
                try await cli.run(["tokens", "create", "x", "--scope", "profiles:write"], environment: env),
                containing: ["unknown scope 'profiles:write'; valid scopes are profiles:read, privacy, pii, admin"])
            cli.expectOneLineError(
                try await cli.run(["tokens", "revoke", "nobody"], environment: env),
                containing: ["there is no API token named 'nobody'"])
        }
    }

    @Test func profilesShowPrintsTheDocumentOrSaysWhyNot() async throws {
        try await cli.withDatabaseURL { url in
            let env = ["DATABASE_URL": url]
            #expect(try await cli.run(["migrate"], environment: env).status == 0)
            let client = PostgresClient(
                configuration: try PostgresConfiguration(connectionString: url), logger: TestDatabase.logger)
            let profile = UUID()
            try await client.execute(
                """
                INSERT INTO cdp.identity_profiles (profile_id, founder_kind, founder_value, founded_seq) VALUES (\(profile), 'email', 'jane@example.com', 1);
                """)
            try await client.execute(
                """
                INSERT INTO cdp.identity_nodes (kind, value, profile_id, first_seq, first_seen_at, last_seen_at)
                VALUES ('email', 'jane@example.com', \(profile), 1, '2026-03-01T08:00:00Z', '2026-03-02T08:00:00Z')
                """)
            try await client.execute(
                "INSERT INTO cdp.profile_data (profile_id, traits) VALUES (\(profile), '{\"plan\": \"pro\"}')")
            await client.shutdown()

            let show = try await cli.run(["profiles", "show", "email: Jane@Example.com", "--events", "5"], environment: env)
            #expect(show.status == 0, "\(show.stderr)")
            #expect(
                show.stdout.hasPrefix(
                    "{\n  \"profile_id\": \"\(profile.uuidString.lowercased())\",\n  \"traits\": {\n    \"plan\": \"pro\"\n  },"),
                "\(show.stdout)")
            #expect(show.stdout.contains("\"first_seen_at\": \"2026-03-01T08:00:00.000Z\""))

            cli.expectOneLineError(
                try await cli.run(["profiles", "show", "email:nobody@example.com"], environment: env),
                containing: ["no profile has the identifier email:nobody@example.com"])
            cli.expectOneLineError(
                try await cli.run(["profiles", "show", "email:jane@example.com", "--events", "101"], environment: env),
                containing: ["--events must be from 0 to 100, got 101"])
            cli.expectOneLineError(try await cli.run(["profiles", "show", "jane"], environment: env), containing: ["KIND:VALUE"])
        }
    }
}
