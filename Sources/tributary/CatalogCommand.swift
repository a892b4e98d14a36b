import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryGovernance
import TributaryModel
import TributaryProfiles

extension TributaryCommand {
    struct CatalogGroup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "catalog",
            abstract: "The typed catalog: the types of traits and event properties, and generated Swift constants.",
            subcommands: [Infer.self, Apply.self, Show.self])
    }
}

extension TributaryCommand.CatalogGroup {
    struct Infer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Infer a catalog from the most recent events; write it, and optionally typed Swift constants.",
            discussion: """
                Traits come from identify traits and context.traits; properties from track events (by event name), \
                page calls ($page) and screen calls ($screen). See README: Typed catalog.
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "How many of the most recent events to sample.") var sample = CatalogInference.defaultSample
        @Option(help: "The catalog file to write.") var output = "catalog.json"
        @Option(
            help:
                "Also write a Swift source with a typed constant per trait and property, and per computed and predictive trait in force."
        ) var swift: String?
        @Flag(help: "Keep what the existing output file says (types, columns, descriptions); only add what is new.")
        var merge = false

        func run() async throws {
            guard sample >= 1 else { throw CLIError("--sample must be at least 1, got \(sample)") }
            var existing: Catalog?
            if merge, let data = FileManager.default.contents(atPath: output) {
                existing = try parseCatalogFile(data, file: output)
            }
            let logger = global.makeLogger()
            let (inferred, computed) = try await global.withMigratedClient(logger: logger) { client in
                (
                    try await CatalogInference.infer(client: client, sample: sample),
                    try await ProfileAdmin(client: client, logger: logger).current()
                )
            }
            let catalog = existing.map { inferred.merged(keeping: $0) } ?? inferred
            try write(try catalog.encoded(), to: output)
            if let swift {
                let command = ["tributary catalog infer", "--output", output, "--swift", swift].joined(separator: " ")
                try write(
                    Data(CatalogSwiftGenerator.source(for: catalog, computed: computed, command: command).utf8), to: swift)
            }
            let properties = catalog.events.values.reduce(0) { $0 + $1.properties.count }
            var source = "from up to the latest \(sample) events"
            if let existing { source += "; \(catalog.changes(from: existing).count) new since \(output)" }
            print("catalog: \(catalog.traits.count) traits, \(catalog.events.count) events, \(properties) properties (\(source))")
            print("wrote \(([output] + (swift.map { [$0] } ?? [])).joined(separator: " and "))")
        }

        private func write(_ data: Data, to path: String) throws {
            do {
                try data.write(to: URL(fileURLWithPath: path), options: .atomic)
            } catch {
                throw CLIError("cannot write \(path): \((error as NSError).localizedDescription)")
            }
        }
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a catalog file and put it in force; regenerates the typed columns of cdp.profiles.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "A JSON catalog file.") var file: String

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: file) else { throw CLIError("cannot read \(file)") }
            let catalog = try parseCatalogFile(data, file: file)
            let logger = global.makeLogger()
            let changes = try await global.withMigratedClient(logger: logger) { client in
                let changes = try await CatalogStore(client: client).apply(catalog)
                if !changes.isEmpty {
                    try await Roles.refreshViews(client)
                    try await recordAudit(
                        client, "catalog.apply", target: file,
                        details: [
                            "traits": .number(String(catalog.traits.count)), "events": .number(String(catalog.events.count)),
                            "changes": .number(String(changes.count)),
                        ])
                }
                return changes
            }
            if changes.isEmpty {
                print("the catalog in \(file) is already in force")
            } else {
                print("applied the catalog in \(file): \(changes.count) changes")
                for change in changes { print("  \(change)") }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the catalog in force as JSON.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let logger = global.makeLogger()
            let catalog = try await global.withMigratedClient(logger: logger) { client in
                try await CatalogStore(client: client).current()
            }
            guard let catalog else {
                throw CLIError("no catalog is in force; put one in force with tributary catalog apply FILE")
            }
            print(String(decoding: try catalog.encoded(), as: UTF8.self), terminator: "")
        }
    }
}

/// Parses a catalog file; a problem becomes one line naming the file and the path in it.
private func parseCatalogFile(_ data: Data, file: String) throws -> Catalog {
    do {
        return try Catalog.parse(data)
    } catch {
        throw CLIError("\(file): \(error)")
    }
}
