import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryGovernance
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributarySegments
import TributaryService
import TributarySyncs

extension TributaryCommand {
    struct IdentityGroup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "identity",
            abstract: "Identity resolution: the real-time stage, full rebuild, rules and explanations.",
            subcommands: [Run.self, Rebuild.self, Explain.self, Status.self, Suspects.self, Rules.self])
    }
}

extension TributaryCommand.IdentityGroup {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the real-time identity stage: stamp new events with profiles until stopped (or once with --once).",
            discussion: "Any number may run against one database: one processes at a time, the others take over if it stops.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Process the events waiting now, then exit.") var once = false
        @Option(help: "Most events per batch (one transaction).") var batchSize = 5000
        @OptionGroup var metrics: MetricsOptions

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let stage = IdentityStage(client: client, logger: logger, batchSize: batchSize)
                if once {
                    let report = try await stage.catchUp()
                    print(
                        "identity: \(report.events) events stamped, \(report.identifiersCreated) new identifiers, "
                            + "\(report.profilesCreated) new profiles, \(report.merges) merges, \(report.hubsDetected) hubs detected, "
                            + "\(report.ignored) identifiers ignored; checkpoint at event \(report.checkpoint)")
                } else {
                    try await metrics.run(logger: logger) { try await stage.run() }
                }
            }
        }
    }

    struct Rebuild: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute the whole identity graph from cdp.events and swap it in atomically.",
            discussion: """
                Ingestion and the real-time stage may keep running; events after the rebuild's snapshot are processed by the stage. \
                The graph is computed in this process (about 105 bytes per event) when the events fit --memory-budget, \
                else in PostgreSQL (slower, about 14 bytes per identifier here).
                """
        )
        @OptionGroup var global: GlobalOptions
        @Option(help: "The most memory the rebuild may use in this process, in MiB.") var memoryBudget = 1024

        func run() async throws {
            let logger = global.makeLogger()
            let report = try await global.withMigratedClient(logger: logger) { client in
                var rebuild = IdentityRebuild(configuration: client.configuration, logger: logger)
                rebuild.progress = { print($0) }
                guard memoryBudget >= 0 else { throw CLIError("--memory-budget must be 0 or more MiB, got \(memoryBudget)") }
                rebuild.memoryBudget = memoryBudget << 20
                let report = try await rebuild.run()
                try await recordAudit(
                    client, "identity.rebuild",
                    details: [
                        "events": .number(String(report.events)), "profiles": .number(String(report.profiles)),
                        "identifiers_changed": .number(String(report.nodesChanged)),
                    ])
                return report
            }
            print(Self.describe(report))
        }

        static func describe(_ report: IdentityRebuild.Report) -> String {
            var lines = [
                "rebuilt the identity graph from \(report.events) events (through seq \(report.lastSeq)) in \(String(format: "%.2f", report.seconds)) s:",
                "  \(report.identifiers) identifiers, \(report.edges) edges, \(report.hubs) hubs, \(report.components) components "
                    + "(\(report.conflictComponents) over a limit, replayed in receive order), \(report.profiles) profiles",
                "  changed: \(report.nodesChanged) identifiers, \(report.eventsRestamped) event stamps",
                "  graph computed \(report.inMemory ? "in memory" : "in PostgreSQL (the events exceed --memory-budget in memory)")",
            ]
            lines.append("  phases: " + report.phases.map { "\($0.0) \(String(format: "%.2f", $0.1)) s" }.joined(separator: "; "))
            return lines.joined(separator: "\n")
        }
    }

    struct Explain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the profile holding an identifier: its identifiers, the events and merges that joined them.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "KIND:VALUE, for example email:jane@example.com or user_id:42.") var identifier: String

        func run() async throws {
            let parsed = try Identifier(parsing: identifier)
            let logger = global.makeLogger()
            let text = try await global.withMigratedClient(logger: logger) { client in
                try await IdentityAdmin(client: client, logger: logger).explain(parsed)
            }
            print(text, terminator: "")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Where the identity stage is, and what the graph holds.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let logger = global.makeLogger()
            let status = try await global.withMigratedClient(logger: logger) { client in
                try await IdentityAdmin(client: client, logger: logger).status()
            }
            print("identity stage at event \(status.checkpoint) of \(status.lastEvent) (\(status.lag) waiting)")
            print(
                "  \(status.identifiers) identifiers in \(status.profiles) profiles; \(status.hubs) hubs; \(status.merges) merges and splits recorded"
            )
            if !status.ignored.isEmpty {
                print(
                    "  ignored identifiers: "
                        + status.ignored.map { "\($0.reason.replacingOccurrences(of: "_", with: " ")) \($0.kind) \($0.count)" }
                        .joined(separator: ", "))
            }
        }
    }

    struct Suspects: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List emails and phones that look like placeholders: linked only to anonymous ids that share nothing else.",
            discussion: """
                Advisory: nothing is refused. A placeholder typed by strangers (guest@shop.example) has this shape, and so \
                does a person who typed their email on several browsers without signing in. Put true placeholders in \
                the rules' "blocked" list (`tributary identity rules apply`), which splits what they joined.
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "Show at most this many, most-linked first.") var limit: Int = 50

        func run() async throws {
            guard limit >= 1 else { throw CLIError("--limit must be at least 1, got \(limit)") }
            let logger = global.makeLogger()
            let suspects = try await global.withMigratedClient(logger: logger) { client in
                try await IdentityAdmin(client: client, logger: logger).junkSuspects(limit: limit)
            }
            if suspects.isEmpty {
                print("no junk suspects: no email or phone is linked only to anonymous ids that share nothing else")
                return
            }
            print("anonymous ids  identifier  profile  last seen")
            for suspect in suspects {
                print(
                    "\(String(suspect.anonymousIDs).leftPadded(to: 13))  "
                        + "\(suspect.identifier)  \(suspect.profile.uuidString.lowercased())  \(PostgresTime.format(suspect.lastSeen))"
                )
            }
        }
    }

    struct Rules: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Identity rules: limits, priorities, normalization, blocked values, hub threshold.",
            subcommands: [Apply.self, Show.self])
    }
}

extension TributaryCommand.IdentityGroup.Rules {
    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a rules file and put it in force.",
            discussion: """
                Newly blocked values are removed and the profiles they joined are split; any other change rebuilds \
                the graph. See README: Identity resolution.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "A JSON rules file.") var file: String

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: file) else { throw CLIError("cannot read \(file)") }
            let rules: IdentityRules
            do {
                rules = try IdentityRules(json: [UInt8](data))
            } catch let error as IdentityError {
                throw CLIError("\(file): \(error)")
            }
            let logger = global.makeLogger()
            let outcome = try await global.withMigratedClient(logger: logger) { client in
                do {
                    return try await IdentityAdmin(client: client, logger: logger).apply(rules: rules)
                } catch let error as IdentityError {
                    throw CLIError("\(file): \(error)")
                }
            }
            switch outcome {
            case .unchanged: print("the identity rules in \(file) are already in force")
            case .stored: print("applied the identity rules in \(file)")
            case .blockedValuesSplit(let count):
                print(
                    "applied the identity rules in \(file): \(count) newly blocked identifiers removed and their profiles re-resolved"
                )
            case .rebuilt(let report):
                print("applied the identity rules in \(file); the graph was rebuilt under them")
                print(TributaryCommand.IdentityGroup.Rebuild.describe(report))
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the rules in force, with defaults filled in, as JSON.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let logger = global.makeLogger()
            let rules = try await global.withMigratedClient(logger: logger) { client in
                try await IdentityAdmin(client: client, logger: logger).rules()
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(rules), as: UTF8.self))
        }
    }
}

/// Runs `body` until SIGINT or SIGTERM, then cancels it and waits for it to finish.
func withTaskCancellationOnSignals(_ body: @escaping @Sendable () async throws -> Void) async throws {
    let task = Task { try await body() }
    let signals = [SIGINT, SIGTERM].map { number -> any DispatchSourceSignal in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number)
        source.setEventHandler { task.cancel() }
        source.resume()
        return source
    }
    defer { signals.forEach { $0.cancel() } }
    do {
        try await task.value
    } catch is CancellationError {}
}
