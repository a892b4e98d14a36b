import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryGovernance
import TributaryModel
import TributaryPredictions
import TributaryProfiles
import TributaryService

extension TributaryCommand {
    struct Traits: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Computed traits: apply definitions from a file, show them, recompute them.",
            subcommands: [Apply.self, Show.self, Recompute.self])
    }
}

extension TributaryCommand.Traits {
    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate computed trait definitions (JSON), store them and recompute every profile's computed traits.",
            discussion:
                "The file's property types are checked against the applied catalog, if any. cdp.profiles gets one typed column per trait."
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The definitions file (JSON).") var file: String
        @Flag(help: "Validate and print the SQL the definitions compile to; change nothing.") var dryRun = false

        func run() async throws {
            let data = try readDefinitionsFile(file)
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let admin = ProfileAdmin(client: client, logger: logger)
                let definitions: ComputedTraitDefinitions
                do { definitions = try await admin.load(data) } catch let error as ProfileError {
                    throw CLIError("\(file): \(error)")
                }
                if dryRun {
                    print(
                        "\(file): \(definitions.computedTraits.count) computed traits, \(definitions.predictions.count) predictive, "
                            + "RFM \(definitions.rfm.enabled ? "on" : "off"); valid")
                    print(try ComputedTraitCompiler(definitions).aggregateSQL(asOf: Date(), through: Int64.max).inlined().sql)
                    return
                }
                let previous = try await admin.current()
                let changed: Bool
                do { changed = try await admin.apply(definitions) } catch let error as ProfileError {
                    throw CLIError("\(file): \(error)")
                }
                guard changed else {
                    print(
                        "computed traits: unchanged (\(definitions.computedTraits.count) traits, \(definitions.predictions.count) predictive)"
                    )
                    try await applyPredictions(definitions, previous: previous, client: client, logger: logger)
                    return
                }
                try await Roles.refreshViews(client)
                try await recordAudit(
                    client, "traits.apply", target: file,
                    details: [
                        "traits": .number(String(definitions.computedTraits.count)), "rfm": .bool(definitions.rfm.enabled),
                    ])
                let started = ContinuousClock.now
                let updated = try await Pipeline.profileStage(client: client, logger: logger)
                    .recomputeAll()
                print(
                    "computed traits: applied \(definitions.computedTraits.count) traits (RFM \(definitions.rfm.enabled ? "on" : "off")); "
                        + "recomputed for every profile in \(ContinuousClock.now - started): \(updated) profiles changed")
                try await applyPredictions(definitions, previous: previous, client: client, logger: logger)
            }
        }

        /// Fits, trains or computes the models of predictive traits that are new or changed, one line per trait; a
        /// model below its quality bar is reported, not an error (the trait stays NULL; the worker tries again).
        private func applyPredictions(
            _ definitions: ComputedTraitDefinitions, previous: ComputedTraitDefinitions, client: PostgresClient,
            logger: Logger
        ) async throws {
            guard !definitions.predictions.isEmpty else { return }
            let outcomes = try await PredictiveTraits(client: client, logger: logger)
                .apply(definitions, previous: previous, progress: progressLines())
            for outcome in outcomes { print("predictive trait \(outcome.trait): \(outcome.action)") }
            if outcomes.contains(where: { $0.action != .current && !$0.action.isRefused }) {
                try await refreshSegmentsReadingScores(client, logger: logger)
            }
            try await recordAudit(
                client, "traits.predictions", target: file,
                details: .object(outcomes.map { ($0.trait, .string("\($0.action)")) }))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the computed trait definitions in force (JSON).")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let logger = global.makeLogger()
            let definitions = try await global.withMigratedClient(logger: logger) { client in
                try await ProfileAdmin(client: client, logger: logger).current()
            }
            print(String(decoding: try definitions.canonicalJSON(), as: UTF8.self))
        }
    }

    struct Recompute: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute every profile's computed traits now (time windows, RFM quintiles).",
            discussion: """
                tributary serve and tributary profiles run recompute the traits that change with time alone on a schedule \
                (--recompute-every); this recomputes all of them unless --time-dependent-only.
                """)
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Only traits that change with time alone (windows, days since, RFM), as the schedule does.")
        var timeDependentOnly = false

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let started = ContinuousClock.now
                let changed = try await Pipeline.profileStage(client: client, logger: logger)
                    .recomputeAll(full: !timeDependentOnly)
                print("computed traits: recomputed in \(ContinuousClock.now - started); \(changed) profiles changed")
            }
        }
    }
}
