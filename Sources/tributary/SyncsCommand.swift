import ArgumentParser
import Foundation
import Logging
import Postgres
import ServiceLifecycle
import TributaryCollection
import TributaryDestinations
import TributaryGovernance
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributarySegments
import TributaryService
import TributarySyncs
import UnixSignals
import TributaryRuntime

extension TributaryCommand {
    struct Syncs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Reverse-ETL syncs: apply definitions (JSON), list them, run one now, show runs and errors.",
            subcommands: [Apply.self, List.self, Show.self, Run.self, Replay.self, Status.self])
    }

    struct Worker: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Run due syncs, real-time activation and event retention until stopped (SIGTERM/SIGINT finish or abandon the batch in flight safely).",
            discussion: """
                Any number of workers may run against one database: each claims due syncs with FOR UPDATE SKIP LOCKED, and a \
                sync never runs twice at once. Real-time syncs ("realtime": true) are delivered as soon as the profile stage \
                records their segment's entries and exits (LISTEN tributary_segments). A worker that dies loses nothing: rows \
                not confirmed by the destination are sent by the next run.
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "Seconds between looks for due syncs.") var pollInterval = 5
        @Flag(inversion: .prefixedNo, help: "Follow real-time syncs in this process.") var realtime = true
        @OptionGroup var metrics: MetricsOptions

        func validate() throws {
            if pollInterval < 1 { throw ValidationError("--poll-interval must be at least 1") }
        }

        func run() async throws {
            let logger = global.makeLogger()
            let target = try await global.resolveTarget(logger: logger)
            // Migrated once on a pool of the worker's syncs role; the pipeline's jobs get pools of their own.
            let client = PostgresClient(
                configuration: target.configuration.forStage("syncs", process: "worker"), options: .init(maxConnections: 1),
                logger: logger)
            try await Migrator(files: try ProjectFiles.locate(), logger: logger).migrate(client)
            await client.shutdown()
            let pipeline = Pipeline(
                configuration: target.configuration, process: "worker",
                options: .init(syncPollInterval: .seconds(pollInterval), realtime: realtime, retention: true, predictions: true),
                destinations: DestinationRegistry.standard(), logger: logger)
            var services = pipeline.services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) }
            if let endpoint = metrics.service(logger: logger) { services.append(.init(service: endpoint)) }
            print(
                "tributary \(Tributary.version) worker running due syncs\(realtime ? " and real-time activation" : "") against \(target.summary)"
            )
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
            await pipeline.shutdown()
        }
    }
}

extension TributaryCommand.Syncs {
    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Validate a syncs file (each source is read once, LIMIT 0) and put it in force; syncs missing from it are removed.",
            discussion: "New syncs and syncs whose schedule changed are due at once. Removing a sync forgets what it delivered.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The syncs file (JSON).") var file: String
        @Flag(help: "Validate only; change nothing.") var dryRun = false

        func run() async throws {
            let data = try readDefinitionsFile(file)
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let store = SyncStore(client: client, logger: logger, registry: .standard())
                let definitions: SyncDefinitions
                do { definitions = try await store.load(data) } catch let error as SyncError {
                    throw CLIError("\(file): \(error)")
                }
                if dryRun {
                    print("\(file): \(definitions.syncs.count) syncs; valid (nothing changed)")
                    return
                }
                let changes = try await store.apply(definitions)
                let counts = Dictionary(grouping: changes, by: \.kind).mapValues(\.count)
                try await recordAudit(
                    client, "syncs.apply", target: file,
                    details: [
                        "syncs": .number(String(definitions.syncs.count)), "added": .number(String(counts[.added] ?? 0)),
                        "changed": .number(String(counts[.changed] ?? 0)), "removed": .number(String(counts[.removed] ?? 0)),
                    ])
                print(
                    "syncs: \(definitions.syncs.count) in force; \(counts[.added] ?? 0) added, \(counts[.changed] ?? 0) changed, "
                        + "\(counts[.removed] ?? 0) removed, \(counts[.unchanged] ?? 0) unchanged")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the syncs in force: mode, destination, rows delivered, errors, last run, next run.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let logger = global.makeLogger()
            let syncs = try await global.withMigratedClient(logger: logger) { client in
                try await SyncStore(client: client, logger: logger, registry: .standard()).list()
            }
            if syncs.isEmpty {
                print("no syncs (tributary syncs apply FILE defines them)")
                return
            }
            for sync in syncs {
                let last = sync.lastStatus.map { "last run \($0) at \(sync.lastRunAt!.formatted(.iso8601))" } ?? "never run"
                let next = sync.enabled ? (sync.nextRunAt.map { "next \($0.formatted(.iso8601))" } ?? "manual") : "disabled"
                print(
                    "\(sync.name)  \(sync.mode) → \(sync.destination)  \(sync.delivered) rows delivered, \(sync.errors) errors; \(last); \(next)"
                )
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a sync's definition as applied, and its diff SQL with --sql.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The sync's name.") var name: String
        @Flag(help: "Print the SQL that computes the sync's changes.") var sql = false

        func run() async throws {
            let logger = global.makeLogger()
            let definitions = try await global.withMigratedClient(logger: logger) { client in
                try await SyncStore(client: client, logger: logger, registry: .standard()).current()
            }
            guard let sync = definitions[name] else { throw CLIError("no sync named \(name) (tributary syncs list shows them)") }
            if sql {
                print(try SyncDiff(sync).insert().inlined().sql + ";")
            } else {
                print((try? JSONParser.parse(Array(sync.document.serialized.utf8)).prettyPrinted) ?? sync.document.serialized)
            }
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run one sync now; with --dry-run, print what would be sent (one JSON line per change) and send nothing.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The sync's name.") var name: String
        @Flag(help: "Compute the changes and print them; send nothing, change nothing.") var dryRun = false
        @Option(help: "With --dry-run: changes to print at most.") var limit = 20

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let runner = SyncRunner(client: client, logger: logger, registry: .standard())
                let printed = PrintBudget(limit: limit)
                let report: SyncRunner.Report
                do {
                    report = try await runner.run(name, trigger: "manual", dryRun: dryRun) { change in
                        guard printed.take() else { return }
                        print(
                            JSONValue.object([
                                ("op", .string(change.operation.rawValue)), ("key", change.key), ("fields", change.fields),
                            ]).serialized)
                    }
                } catch let error as SyncError { throw CLIError(error.description) }
                if report.status == .skipped {
                    throw CLIError("sync \(name) is running in another process; try again when it has finished")
                }
                if dryRun {
                    print(
                        "dry run of \(name): \(report.added) added, \(report.changed) changed, \(report.removed) removed would be sent"
                            + (printed.skipped > 0 ? " (\(printed.skipped) not printed)" : ""))
                } else {
                    print(Self.describe(report, name: name))
                    if report.status == .failed { throw ExitCode(1) }
                }
            }
        }

        /// One line for a finished run.
        static func describe(_ report: SyncRunner.Report, name: String) -> String {
            let seconds = report.duration.seconds
            return
                "sync \(name) run \(report.runID): \(report.status.rawValue); \(report.added) added, \(report.changed) changed, "
                + "\(report.removed) removed; \(report.delivered) delivered, \(report.rejected) rejected, \(report.failed) failed "
                + "in \(report.batches) batches (\(report.attempts) requests), \(String(format: "%.2f", seconds)) s"
                + (report.error.map { "; \($0)" } ?? "")
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send again the rows a run rejected or failed to deliver (after fixing the mapping or the destination).",
            discussion: """
                The rows are sent with their current values from the source, as a run of their keys only (trigger \
                "replay"); rows delivered since, or gone from the source, are not sent. Which rows each run sent and what \
                became of them is in cdp.sync_run_rows (kept for the sync's rowHistoryDays, default 14).
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The sync's name.") var name: String
        @Option(help: "The run whose rows to replay (default: the latest run with rejected or failed rows).") var run: Int64?
        @Flag(help: "Only the rows the destination rejected, not those that failed.") var rejected = false

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let runner = SyncRunner(client: client, logger: logger, registry: .standard())
                let replay: SyncRunner.Replay
                do {
                    replay = try await runner.replay(name, run: run, rejectedOnly: rejected)
                } catch let error as SyncError { throw CLIError(error.description) }
                let what = rejected ? "rejected" : "rejected or failed"
                guard let report = replay.report else {
                    print(
                        replay.sourceRun == 0
                            ? "nothing to replay: no run of \(name) has \(what) rows in its history"
                            : "nothing to replay: run \(replay.sourceRun) of \(name) has no \(what) rows")
                    return
                }
                if report.status == .skipped {
                    throw CLIError("sync \(name) is running in another process; try again when it has finished")
                }
                print(
                    "replaying \(replay.rows) \(what) rows of run \(replay.sourceRun)"
                        + (replay.settled > 0 ? " (\(replay.settled) delivered since or gone from the source: not sent)" : ""))
                print(Run.describe(report, name: name))
                if report.status == .failed { throw ExitCode(1) }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The latest runs (of one sync or all) and the rows waiting after a rejection.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "A sync's name (default: all).") var name: String?
        @Option(help: "Runs and errors to show.") var limit = 10
        @Option(help: "Show this run's rows and what became of each (from cdp.sync_run_rows).") var run: Int64?

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let store = SyncStore(client: client, logger: logger, registry: .standard())
                if let run {
                    let rows = try await store.runRows(run, limit: limit)
                    print(rows.isEmpty ? "run \(run): no rows in its history" : "run \(run) rows:")
                    for row in rows {
                        print("  \(row.key) \(row.operation): \(row.outcome)\(row.reason.map { " (\($0))" } ?? "")")
                    }
                    return
                }
                let runs = try await store.runs(name, limit: limit)
                print(runs.isEmpty ? "no runs" : "runs:")
                for run in runs {
                    print(
                        "  \(run.runID) \(run.sync) \(run.status)\(run.dryRun ? " (dry run)" : "") \(run.startedAt.formatted(.iso8601)) "
                            + "\(run.trigger): +\(run.added) ~\(run.changed) -\(run.removed); \(run.delivered) delivered, \(run.rejected) rejected, "
                            + "\(run.failed) failed\(run.durationMilliseconds.map { ", \($0) ms" } ?? "")\(run.error.map { "; \($0)" } ?? "")"
                    )
                }
                let errors = try await store.errors(name, limit: limit)
                if !errors.isEmpty { print("rows waiting after a rejection:") }
                for error in errors {
                    print("  \(error.sync) \(error.key): \(error.reason) (\(error.attempts) tries)")
                }
            }
        }
    }
}

/// Counts what a dry run prints.
final class PrintBudget: @unchecked Sendable {
    private let lock = NSLock()
    private var left: Int
    private(set) var skipped = 0
    init(limit: Int) { left = limit }
    func take() -> Bool {
        lock.withLock {
            if left > 0 { left -= 1; return true }
            skipped += 1
            return false
        }
    }
}
