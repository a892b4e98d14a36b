import ArgumentParser
import Foundation
import Postgres
import TributaryCollection
import TributaryModel

extension TributaryCommand {
    struct Webhooks: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Inbound webhooks: mappings that turn a tool's payloads into Segment calls.",
            subcommands: [Apply.self])
    }
}

extension TributaryCommand.Webhooks {
    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a mapping file and store it for its source (POST /v1/webhooks/SOURCE then uses it).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "A JSON mapping file (see README: Inbound webhooks).") var file: String

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: file) else { throw CLIError("cannot read \(file)") }
            let mapping: WebhookMapping
            do {
                mapping = try WebhookMapping(json: JSONParser.parse([UInt8](data)))
            } catch let error as JSONParseError {
                throw CLIError("\(file): \(error)")
            } catch let error as ImportError {
                throw CLIError("\(file): \(error)")
            }
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                do {
                    try await WebhookMappingStore(client: client).apply(mapping)
                } catch let error as ImportError {
                    throw CLIError("\(file): \(error)")
                }
                try await recordAudit(
                    client, "webhooks.apply", target: mapping.source, details: ["type": .string(mapping.type.rawValue)])
            }
            print(
                "applied the webhook mapping of source '\(mapping.source)': POST /v1/webhooks/\(mapping.source) "
                    + "now makes \(mapping.type.rawValue) calls")
        }
    }
}
