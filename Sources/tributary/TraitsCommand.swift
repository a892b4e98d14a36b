import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryGovernance
import TributaryModel
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
                        "\(file): \(definitions.computedTraits.count) computed traits, RFM \(definitions.rfm.enabled ? "on" : "off"); valid"
                    )
                    print(try ComputedTraitCompiler(definitions).aggregateSQL(asOf: Date(), through: Int64.max))
                    return
                }
                let changed: Bool
                do { changed = try await admin.apply(definitions) } catch let error as ProfileError {
                    throw CLIError("\(file): \(error)")
                }
                guard changed else {
                    print("computed traits: unchanged (\(definitions.computedTraits.count) traits)")
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
            }
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
