import ArgumentParser
import Foundation
import Postgres
import TributaryCore

extension TributaryCommand {
    /// `tributary profiles …`: unified profiles. Add subcommands to `subcommands` and as extensions below.
    struct ProfilesCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "profiles",
            abstract: "Unified profiles: traits, computed traits, identities and recent events.",
            subcommands: [Show.self])
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
