import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryGovernance
@testable import TributaryModel
@testable import TributaryProfiles
@testable import TributaryService

/// `tributary roles setup` against real PostgreSQL: an analyst reads schema `analyst` only, masked, and writes
/// nothing; tributary_pii unmasks. Each test makes its own uniquely named roles (roles are cluster-wide and tests run
/// in parallel) and drops them; tributary_analyst and tributary_pii themselves are shared and never dropped.
@Suite struct RolesTests {
    struct Logins {
        let analyst: String
        let pii: String
    }

    func withAnalysts(_ body: (PostgresClient, Logins) async throws -> Void) async throws {
        try await TestDatabase.withFreshDatabase { client in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            let roles = Roles(client: client)
            try await roles.setup(actor: .cli)
            let suffix = UUID().uuidString.prefix(8).lowercased()
            let logins = Logins(analyst: "test_analyst_\(suffix)", pii: "test_pii_\(suffix)")
            try await client.execute("CREATE ROLE \(identifier: logins.analyst) LOGIN")
            try await client.execute("CREATE ROLE \(identifier: logins.pii) LOGIN")
            do {
                #expect(try await roles.grant(login: logins.analyst, pii: false, actor: .cli) == [Roles.analyst])
                #expect(try await roles.grant(login: logins.pii, pii: true, actor: .cli) == [Roles.analyst, Roles.pii])
                #expect(try await roles.grant(login: logins.pii, pii: true, actor: .cli) == [], "granting twice changes nothing")
                try await body(client, logins)
            } catch {
                try? await dropRoles(client, logins)
                throw error
            }
            try await dropRoles(client, logins)
        }
    }

    func dropRoles(_ client: PostgresClient, _ logins: Logins) async throws {
        try await client.execute("DROP ROLE IF EXISTS \(identifier: logins.analyst)")
        try await client.execute("DROP ROLE IF EXISTS \(identifier: logins.pii)")
    }

    /// Runs `query` as `role` (SET LOCAL ROLE in a transaction of its own).
    func rows(as role: String, _ client: PostgresClient, _ query: PostgresQuery) async throws -> PostgresRows {
        try await client.withTransaction { tx in
            try await tx.execute("SET LOCAL ROLE \(identifier: role)")
            return try await tx.query(query)
        }
    }

    /// The SQLSTATE `query` fails with as `role` (nil if it succeeds).
    func failure(as role: String, _ client: PostgresClient, _ query: PostgresQuery) async -> SQLState? {
        do {
            _ = try await rows(as: role, client, query)
            return nil
        } catch let error as PostgresError {
            return error.sqlState
        } catch {
            return SQLState("?????")
        }
    }

    func insertPerson(_ client: PostgresClient) async throws -> UUID {
        let profile = UUID()
        try await client.execute(
            "INSERT INTO cdp.sources (source_id, name, write_key_sha256, write_key_hint) VALUES ('src_web', 'web', 'h', 'k')")
        try await client.execute("SELECT cdp.ensure_event_partition(now()::date)")
        try await client.execute(
            """
            INSERT INTO cdp.events (seq, message_id, source_id, type, user_id, anonymous_id, profile_id, timestamp, received_at, traits, context, properties)
            VALUES (nextval('cdp.events_seq'), 'm1', 'src_web', 'identify', 'user-12345', 'anon-98765', \(profile), now(), now(),
                    '{"email": "jane@example.com", "First Name": "Jane", "plan": "pro"}',
                    '{"ip": "203.0.113.42", "locale": "en-GB", "traits": {"phone": "+15551234567"},
                      "externalIds": [{"id": "crm-777777", "type": "crm", "collection": "users"}]}',
                    '{"revenue": 12.5}')
            """)
        try await client.execute(
            """
            INSERT INTO cdp.identity_profiles (profile_id, founder_kind, founder_value, founded_seq) VALUES (\(profile), 'email', 'jane@example.com', 1)
            """)
        try await client.execute(
            """
            INSERT INTO cdp.identity_nodes (kind, value, profile_id, first_seq, first_seen_at, last_seen_at)
            VALUES ('email', 'jane@example.com', \(profile), 1, now(), now())
            """)
        try await client.execute(
            """
            INSERT INTO cdp.profile_data (profile_id, traits) VALUES (\(profile), '{"email": "jane@example.com", "plan": "pro", "phone": 4915551234567}')
            """)
        return profile
    }

    @Test func analystCannotReadRawPIIOrWriteAnything() async throws {
        try await withAnalysts { client, logins in
            _ = try await insertPerson(client)
            for relation in [
                "cdp.events", "cdp.identities", "cdp.profiles", "cdp.identity_nodes", "cdp.profile_data", "cdp.audit_log",
                "cdp.settings", "cdp.event_message_ids", "cdp.sources", "cdp.segment_members", "cdp.consent",
            ] {
                for login in [logins.analyst, logins.pii] {
                    #expect(
                        await failure(as: login, client, "SELECT count(*) FROM \(unescaped: relation)") == .insufficientPrivilege,
                        "\(login) reads \(relation)")
                }
            }
            let writes: [PostgresQuery] = [
                "INSERT INTO cdp.events (seq, message_id, source_id, type, timestamp, received_at) VALUES (99, 'x', 'src_web', 'track', now(), now())",
                "UPDATE cdp.settings SET value = '1' WHERE key = 'installation_id'",
                "DELETE FROM cdp.audit_log",
                "UPDATE analyst.sources SET name = 'hacked'",
                "DELETE FROM analyst.segment_members",
                "INSERT INTO analyst.sources (source_id, name) VALUES ('s', 's')",
                "CREATE TABLE public.stolen (x int)",
                "CREATE TABLE analyst.stolen (x int)",
                "CREATE TABLE cdp.stolen (x int)",
                "CREATE VIEW analyst.mine AS SELECT 1",
                "CREATE SCHEMA stolen",
                "SELECT cdp.ensure_event_partition('2001-01-01')",
                "SELECT cdp.apply_analyst_views()",
            ]
            for write in writes {
                for login in [logins.analyst, logins.pii] {
                    #expect(await failure(as: login, client, write) == .insufficientPrivilege, "\(login): \(write.sql)")
                }
            }
            // analyst.events is no simple view: writing to it fails before privileges are even checked.
            for login in [logins.analyst, logins.pii] {
                #expect(await failure(as: login, client, "DELETE FROM analyst.events") == SQLState("55000"))
            }
            #expect(try await client.query("SELECT name FROM cdp.sources").scalar(String.self) == "web")
            #expect(try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self) == 1)
        }
    }

    @Test func analystViewsMaskPIIUnlessTributaryPII() async throws {
        try await withAnalysts { client, logins in
            let profile = try await insertPerson(client)
            let eventQuery: PostgresQuery = """
                SELECT user_id, anonymous_id, traits::text, context::text, properties::text, profile_id FROM analyst.events
                """
            let masked = try await rows(as: logins.analyst, client, eventQuery).first!.decode(
                (String, String, String, String, String, UUID).self)
            #expect(masked.0 == "******2345" && masked.1 == "******8765")
            #expect(masked.2 == #"{"plan": "pro", "email": "j***@example.com", "First Name": "****"}"#, "\(masked.2)")
            #expect(masked.3.contains(#""ip": "********3.42""#) && masked.3.contains(#""locale": "en-GB""#), "\(masked.3)")
            #expect(
                masked.3.contains(#""traits": {"phone": "********4567"}"#) && masked.3.contains(#""id": "******7777""#),
                "\(masked.3)")
            #expect(masked.4 == #"{"revenue": 12.5}"# && masked.5 == profile)

            let raw = try await rows(as: logins.pii, client, eventQuery).first!.decode(
                (String, String, String, String, String, UUID).self)
            #expect(
                raw.0 == "user-12345" && raw.1 == "anon-98765" && raw.2.contains("jane@example.com")
                    && raw.3.contains("203.0.113.42"))

            let identity: PostgresQuery = "SELECT kind, value FROM analyst.identities"
            #expect(
                try await rows(as: logins.analyst, client, identity).first!.decode((String, String).self) == (
                    "email", "j***@example.com"
                ))
            #expect(
                try await rows(as: logins.pii, client, identity).first!.decode((String, String).self) == (
                    "email", "jane@example.com"
                ))

            let traits: PostgresQuery = "SELECT traits::text FROM analyst.profiles WHERE profile_id = \(profile)"
            #expect(
                try await rows(as: logins.analyst, client, traits).scalar(String.self)
                    == #"{"plan": "pro", "email": "j***@example.com", "phone": "*********4567"}"#)
            #expect(
                try await rows(as: logins.pii, client, traits).scalar(String.self)
                    == #"{"plan": "pro", "email": "jane@example.com", "phone": 4915551234567}"#)
            for view in ["profile_merges", "trait_changes", "sources", "segment_members", "segment_history", "consent"] {
                #expect(
                    try await rows(as: logins.analyst, client, "SELECT count(*) FROM analyst.\(identifier: view)").scalar(
                        Int.self) >= 0)
            }
        }
    }

    @Test func catalogPIIFlagsAndTypedColumnsAreMasked() async throws {
        try await withAnalysts { client, logins in
            let profile = try await insertPerson(client)
            // plan becomes personal data, email is declared not to be; both get typed columns.
            try await CatalogStore(client: client).apply(
                Catalog(traits: [
                    "plan": .init(type: .string, pii: true), "email": .init(type: .string, pii: false),
                    "phone": .init(type: .integer, column: "phone_number", pii: true),
                ]))
            try await Roles.refreshViews(client)
            let query: PostgresQuery =
                "SELECT plan, email, phone_number, traits ->> 'plan' FROM analyst.profiles WHERE profile_id = \(profile)"
            let masked = try await rows(as: logins.analyst, client, query).first!.decode((String?, String?, Int64?, String?).self)
            #expect(masked.0 == "***", "\(masked)")
            #expect(masked.1 == "jane@example.com" && masked.2 == nil && masked.3 == "***", "\(masked)")
            let raw = try await rows(as: logins.pii, client, query).first!.decode((String?, String?, Int64?, String?).self)
            #expect(raw.0 == "pro" && raw.1 == "jane@example.com" && raw.2 == 4_915_551_234_567 && raw.3 == "pro", "\(raw)")
        }
    }

    @Test func setupIsIdempotentRecordsItAndDryRunChangesNothing() async throws {
        try await TestDatabase.withFreshDatabase { client in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            let roles = Roles(client: client)
            let first = try await roles.setup(actor: .cli)
            #expect(first.views.contains("events") && first.views.contains("profiles") && first.views.contains("identities"))
            #expect(first.statements.contains(#"GRANT SELECT ON ALL TABLES IN SCHEMA "analyst" TO "tributary_analyst""#))
            let again = try await roles.setup(actor: .cli)
            #expect(again.createdRoles.isEmpty && again.revokedCreate.isEmpty)
            #expect(!again.statements.contains { $0.hasPrefix("CREATE ROLE") })
            let dry = try await roles.setup(actor: .cli, dryRun: true)
            #expect(dry.statements == again.statements)
            let entries = try await AuditLog(client: client).entries(actionPrefix: "roles.")
            #expect(entries.count == 2 && entries.allSatisfy { $0.action == "roles.setup" && $0.actor.hasPrefix("cli:") })
            // A migrate keeps the grants (views re-created, re-granted).
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            #expect(
                try await client.query(
                    """
                    SELECT has_table_privilege('tributary_analyst', 'analyst.profiles', 'SELECT')
                       AND has_table_privilege('tributary_analyst', 'analyst.events', 'SELECT')
                       AND NOT has_table_privilege('tributary_analyst', 'analyst.events', 'INSERT')
                    """
                ).scalar(Bool.self))
            await #expect(throws: RolesError.self) {
                try await roles.grant(login: "no_such_login_\(UUID().uuidString.prefix(6))", pii: false, actor: .cli)
            }
        }
    }
}
