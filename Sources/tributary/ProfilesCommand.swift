import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributarySyncs
import TributaryService

extension TributaryCommand {
    struct ProfilesCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "profiles",
            abstract: "Unified profiles: show one, the profile stage (traits, computed traits), rebuilds, status.",
            subcommands: [Show.self, Run.self, Rebuild.self, Status.self])
    }
}

extension TributaryCommand.ProfilesCommand {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the profile stage after the identity stage until stopped (or once with --once).",
            discussion:
                "It merges traits, keeps computed traits current for touched profiles and recomputes them all on a schedule.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Process what is waiting now, then exit.") var once = false
        @Option(help: "Most events per batch (one transaction).") var batchSize = 5000
        @Option(help: "Seconds between bulk recomputes of computed traits (time windows, RFM).") var recomputeEvery = 3600
        @OptionGroup var metrics: MetricsOptions

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let stage = Pipeline.profileStage(client: client, logger: logger, batchSize: batchSize)
                if once {
                    let report = try await stage.catchUp()
                    let recomputed = try await stage.recomputeIfDue(interval: .seconds(recomputeEvery))
                    print(
                        "profiles: \(report.events) events, \(report.profilesUpdated) profiles updated, "
                            + "\(report.profilesRecomputed) recomputed after merges, \(report.traitChanges) trait changes"
                            + (report.rebuilt ? " (rebuilt after an identity rebuild)" : "")
                            + "; checkpoint at event \(report.checkpoint)"
                            + (recomputed.map { "; time-dependent computed traits recomputed for everyone (\($0) changed)" } ?? "")
                    )
                } else {
                    try await metrics.run(logger: logger) { try await stage.run(recomputeInterval: .seconds(recomputeEvery)) }
                }
            }
        }
    }

    struct Rebuild: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rebuild every profile's traits and computed traits from events (changes go to the trait history).")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let started = ContinuousClock.now
                let report = try await Pipeline.profileStage(client: client, logger: logger).rebuild()
                print(
                    "profiles: rebuilt through event \(report.checkpoint) in \(ContinuousClock.now - started): "
                        + "\(report.profilesUpdated) profiles changed, \(report.traitChanges) trait changes")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show how far the profile stage has got.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let logger = global.makeLogger()
            let status = try await global.withMigratedClient(logger: logger) { client in
                try await ProfileAdmin(client: client, logger: logger).status()
            }
            print(
                """
                profile stage at event \(status.checkpoint) (identity stage at \(status.identityCheckpoint))
                profiles: \(status.profiles) (\(status.profilesWithData) with data), trait values: \(status.traitValues), trait changes: \(status.traitChanges)
                last bulk recompute of computed traits: \(status.lastRecompute.map { PostgresTime.format($0) } ?? "never")
                """)
        }
    }
}

extension TributaryCommand.ProfilesCommand {
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the profile holding an identifier as the profile API returns it (pretty-printed JSON).",
            discussion: """
                The value is normalized as the identity stage normalizes identifiers, so email:Jane@Example.com finds \
                jane@example.com. profile_id:UUID takes any profile id ever issued (merged-away ids resolve).
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "KIND:VALUE, for example email:jane@example.com, user_id:42 or profile_id:UUID.") var identifier: String
        @Option(help: "How many of the newest events to include (0 to \(ProfileDocuments.maxEvents)).")
        var events = ProfileDocuments.defaultEvents

        func run() async throws {
            let parsed = try Identifier(parsing: identifier)
            guard ProfileDocuments.validEventCount(events) else {
                throw CLIError("--events must be from 0 to \(ProfileDocuments.maxEvents), got \(events)")
            }
            let logger = global.makeLogger()
            let lookup = try await global.withMigratedClient(logger: logger) { client in
                try await ProfileDocuments(client: client).lookup(kind: parsed.kind, value: parsed.value, events: events)
            }
            guard case .found(let document) = lookup else { throw CLIError(lookup.message ?? "no profile") }
            print((try? JSONParser.parse(Array(document.utf8)).prettyPrinted) ?? document)
        }
    }
}
