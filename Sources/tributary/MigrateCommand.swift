import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryIdentity
import TributaryProfiles
import TributaryService
import TributarySyncs

extension TributaryCommand {
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply pending migrations, then re-apply sql/ (idempotent; safe to run concurrently).",
            subcommands: [Apply.self, Status.self],
            defaultSubcommand: Apply.self
        )
    }
}

extension TributaryCommand.Migrate {
    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "apply", abstract: "Apply pending migrations and re-apply sql/ (the default).")
        @OptionGroup var global: GlobalOptions

        @Option(
            help: ArgumentHelp(
                "Table layout: single (one PostgreSQL), citus (distributed tables on Citus), standin (Citus's key rules on "
                    + "plain PostgreSQL, for tests). Default: the layout the database has, else citus if the extension "
                    + "is installed, else single.",
                valueName: "layout"))
        var distribution: DistributionMode?

        func run() async throws {
            let logger = global.makeLogger()
            let target = try await global.resolveTarget(logger: logger)
            let migrator = Migrator(files: try ProjectFiles.locate(), logger: logger)
            let report = try await target.withClient(logger: logger) {
                try await migrator.migrate($0, distribution: distribution)
            }
            for migration in report.applied { print("applied  \(migration.fileName)") }
            for change in report.distributionChanges { print("layout   \(change)") }
            if report.distribution != .single { print("layout: \(report.distribution.rawValue)") }
            print(
                "migrations: \(report.applied.count) applied now, \(report.alreadyApplied) already applied; "
                    + "sql/: \(report.sqlFiles.count) files re-applied")
            if case .blockedValuesSplit(let count) = report.identityRules {
                print("identity: this version's built-in blocked values removed \(count) identifiers from the graph")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List applied and pending migrations.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let logger = global.makeLogger()
            let target = try await global.resolveTarget(logger: logger)
            let migrator = Migrator(files: try ProjectFiles.locate(), logger: logger)
            let entries = try await target.withClient(logger: logger) { try await migrator.status($0) }
            print("database: \(target.summary)")
            for entry in entries {
                let label = String(format: "%04d_%@", entry.version, entry.name)
                switch entry.state {
                case .applied(let at, let duration):
                    print("applied  \(label)  at \(at.formatted(.iso8601))  in \(String(format: "%.1f", duration)) ms")
                case .pending:
                    print("pending  \(label)")
                case .changed(let recorded, let current):
                    print("CHANGED  \(label)  recorded \(recorded.prefix(12))…, file \(current.prefix(12))…")
                case .unknown:
                    print("UNKNOWN  \(label)  (in the database, not in this build)")
                }
            }
            let pending = entries.filter { $0.state == .pending }.count
            print("\(entries.count - pending) applied, \(pending) pending")
        }
    }
}

extension DistributionMode: ExpressibleByArgument {}
