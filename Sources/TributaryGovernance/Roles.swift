import Foundation
import Postgres
import TributaryModel

/// The Postgres roles of PII protection (`tributary roles setup`):
///
/// - `tributary_analyst` (NOLOGIN): USAGE on schema `analyst` and SELECT on its views, nothing else: no access to
///   the raw tables of `cdp`, no write anywhere. The views mask personal data (`sql/0700_analyst.sql`).
/// - `tributary_pii` (NOLOGIN): grants nothing by itself; a member of it sees the analyst views unmasked.
///
/// Give people access by granting these roles to their login roles (``grant(login:pii:actor:)``). Roles are
/// cluster-wide, grants are per database: run setup once in every database Tributary uses. Setup is idempotent and
/// safe to run concurrently (also from other databases of the same cluster).
///
/// ```swift
/// let report = try await Roles(client: client).setup(actor: .cli)
/// try await Roles(client: client).grant(login: "jane", pii: false, actor: .cli)
/// ```
public struct Roles: Sendable {
    /// May read schema `analyst`, masked.
    public static let analyst = "tributary_analyst"
    /// Unmasks schema `analyst` for its members.
    public static let pii = "tributary_pii"
    /// The schema of masked views.
    public static let schema = "analyst"

    /// What setup did (or, in a dry run, would do).
    public struct SetupReport: Sendable, Equatable {
        /// The SQL statements, in order.
        public var statements: [String] = []
        /// Roles created by this run (empty when they already existed).
        public var createdRoles: [String] = []
        /// Schemas where CREATE was revoked from PUBLIC.
        public var revokedCreate: [String] = []
        /// The views of schema `analyst` granted to `tributary_analyst`.
        public var views: [String] = []
        /// Things setup could not do, with what to do about them.
        public var warnings: [String] = []
    }

    let client: PostgresClient

    public init(client: PostgresClient) { self.client = client }

    /// Serializes setups and the re-grant `migrate` does (`cdp.grant_analyst_views`, same key through `hashtext`).
    static let lockSQL: PostgresQuery = "SELECT pg_advisory_xact_lock(hashtext('tributary.roles'))"
    static let duplicateObject = SQLState("42710")

    /// Creates the roles if missing, revokes CREATE from PUBLIC on every schema of this database that grants it, and
    /// grants schema `analyst` to `tributary_analyst`; records `roles.setup` in the audit log. With `dryRun`, only
    /// reports the statements it would run.
    @discardableResult
    public func setup(actor: AuditLog.Actor, dryRun: Bool = false) async throws -> SetupReport {
        try await client.withTransaction { tx in
            try await tx.execute(Self.lockSQL)
            var report = SetupReport()
            /// Records `statement` and, unless dry, runs it in a savepoint (the caller handles its errors): true if it ran.
            func run(_ statement: String) async throws -> Bool {
                report.statements.append(statement)
                guard !dryRun else { return false }
                try await tx.withSavepoint { try await $0.script(statement) }
                return true
            }
            let existing: [String] = try await tx.query(
                """
                SELECT rolname FROM pg_roles WHERE rolname = ANY (\([Self.analyst, Self.pii]))
                """
            ).map { try $0.decode(String.self) }
            for role in [Self.analyst, Self.pii] where !existing.contains(role) {
                do {
                    if try await run("CREATE ROLE \(try SQLQuoting.identifier(role)) NOLOGIN") {
                        report.createdRoles.append(role)
                    }
                } catch let error as PostgresError
                    where error.sqlState == Self.duplicateObject || error.sqlState == .uniqueViolation
                {
                    // Created meanwhile by a setup in another database of this cluster: fine.
                } catch let error as PostgresError where error.sqlState == .insufficientPrivilege {
                    throw RolesError(
                        """
                        cannot create the role \(role): the database user lacks CREATEROLE (\(error.message)); \
                        have an administrator run `CREATE ROLE \(role) NOLOGIN;`, then run `tributary roles setup` again
                        """)
                }
            }
            let open = try await tx.query(
                """
                SELECT DISTINCT n.nspname FROM pg_namespace AS n, aclexplode(n.nspacl) AS a
                WHERE a.grantee = 0 AND a.privilege_type = 'CREATE' ORDER BY 1
                """
            ).map { try $0.decode(String.self) }
            for schema in open {
                let statement = "REVOKE CREATE ON SCHEMA \(try SQLQuoting.identifier(schema)) FROM PUBLIC"
                do {
                    if try await run(statement) { report.revokedCreate.append(schema) }
                } catch let error as PostgresError where error.sqlState == .insufficientPrivilege {
                    report.warnings.append(
                        """
                        could not revoke CREATE on schema \(schema) from PUBLIC (\(error.message)): any role, the analyst \
                        included, can create tables there; have the schema's owner run `\(statement);`
                        """)
                }
            }
            let analyst = try SQLQuoting.identifier(Self.analyst), schema = try SQLQuoting.identifier(Self.schema)
            report.statements += [
                "GRANT USAGE ON SCHEMA \(schema) TO \(analyst)",
                "GRANT SELECT ON ALL TABLES IN SCHEMA \(schema) TO \(analyst)",
            ]
            report.views = try await tx.query(
                """
                SELECT c.relname FROM pg_class AS c WHERE c.relnamespace = \(Self.schema)::regnamespace AND c.relkind = 'v' ORDER BY 1
                """
            ).map { try $0.decode(String.self) }
            guard !dryRun else { return report }
            for statement in report.statements.suffix(2) { try await tx.script(statement) }
            try await AuditLog.record(
                tx, actor: actor, action: "roles.setup",
                details: .object([
                    ("created", .array(report.createdRoles.map { .string($0) })),
                    ("revoked_create", .array(report.revokedCreate.map { .string($0) })),
                    ("views", .number(String(report.views.count))),
                ]))
            return report
        }
    }

    /// Regenerates `analyst.profiles` after `cdp.profiles` changed (a catalog or computed traits applied) and
    /// re-grants schema `analyst`; every `migrate` does the same.
    public static func refreshViews(_ client: PostgresClient) async throws {
        try await client.withTransaction { try await AnalystViews.refreshProfiles($0) }
    }

    /// Grants `tributary_analyst` (and `tributary_pii` with `pii`) to an existing login role; records `roles.grant`.
    /// Returns the roles newly granted (empty if it already had them).
    @discardableResult
    public func grant(login: String, pii: Bool, actor: AuditLog.Actor) async throws -> [String] {
        try await client.withTransaction { tx in
            try await tx.execute(Self.lockSQL)
            let wanted = pii ? [Self.analyst, Self.pii] : [Self.analyst]
            let present = try await tx.query("SELECT rolname FROM pg_roles WHERE rolname = ANY (\(wanted + [login]))")
                .map { try $0.decode(String.self) }
            guard present.contains(login) else {
                throw RolesError(
                    "there is no role named '\(login)'; create it first (CREATE ROLE \(try SQLQuoting.identifier(login)) LOGIN PASSWORD '…')"
                )
            }
            if let missing = wanted.first(where: { !present.contains($0) }) {
                throw RolesError("the role \(missing) does not exist yet; run `tributary roles setup` first")
            }
            var granted: [String] = []
            for role in wanted {
                let member = try await tx.query("SELECT pg_has_role(\(login), \(role), 'MEMBER')").scalar(Bool.self)
                if member { continue }
                try await tx.script("GRANT \(try SQLQuoting.identifier(role)) TO \(try SQLQuoting.identifier(login))")
                granted.append(role)
            }
            try await AuditLog.record(
                tx, actor: actor, action: "roles.grant", target: login,
                details: .object([
                    ("granted", .array(granted.map { .string($0) })), ("pii", .bool(pii)),
                ]))
            return granted
        }
    }
}

/// A roles setup or grant that cannot be done, with what to do about it.
public struct RolesError: ReportedError, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
