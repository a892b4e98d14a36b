import ArgumentParser
import Foundation
import Postgres
import TributaryCore

extension TributaryCommand {
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The whole path on the embedded default: start the database, migrate, show what is there.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let logger = global.makeLogger()
            let started = ContinuousClock.now
            let target = try await global.resolveTarget(logger: logger)
            let migrator = Migrator(files: try ProjectFiles.locate(), logger: logger)
            try await target.withClient(logger: logger) { client in
                let report = try await migrator.migrate(client)
                let version = try await client.query("SHOW server_version").scalar(String.self)
                let installation = try await client.query("SELECT cdp.installation_id()").scalar(String.self)
                let schemaVersion = try await client.query("SELECT version, name FROM cdp.schema_version")
                let (latest, latestName) = try schemaVersion[0].decode((Int, String?).self)
                let relations = try await client.query("""
                    SELECT n.nspname AS schema,
                           c.relname AS name,
                           CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                                          WHEN 'p' THEN 'partitioned table' ELSE 'table' END AS kind
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname IN ('cdp', 'segments') AND c.relkind IN ('r', 'v', 'm', 'p')
                      AND NOT c.relispartition
                    ORDER BY 1, 2
                    """)

                print("Tributary \(Tributary.version) demo")
                print("  database      PostgreSQL \(version), \(target.summary)")
                if case .embedded(let server) = target.source { print("  connect       psql \"\(try server.url())\"") }
                print("  installation  \(installation)")
                print(
                    "  migrations    \(report.applied.count) applied now, \(report.alreadyApplied) already applied; "
                        + "schema version \(latest) (\(latestName ?? "none"))")
                print("  relations     \(relations.count) in schemas cdp and segments:")
                for row in relations {
                    let (schema, name, kind) = try row.decode((String, String, String).self)
                    print("                \(schema).\(name) (\(kind))")
                }
                let elapsed = ContinuousClock.now - started
                print("  took          \(elapsed.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow)))")
            }
        }
    }
}
