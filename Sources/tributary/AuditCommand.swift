import ArgumentParser
import Foundation
import Postgres
import TributaryGovernance
import TributaryModel

extension TributaryCommand {
    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the audit log of administrative actions (who, what, when), newest first.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only actions starting with this prefix, for example 'tokens.' or 'retention'.") var action: String?
        @Option(help: "At most this many entries.") var limit = 50

        func validate() throws {
            guard limit >= 1 else { throw ValidationError("--limit must be at least 1") }
        }

        func run() async throws {
            let entries = try await global.withMigratedClient(logger: global.makeLogger()) { client in
                try await AuditLog(client: client).entries(actionPrefix: action, limit: limit)
            }
            if entries.isEmpty {
                print(action.map { "no audit entries for actions starting with '\($0)'" } ?? "no audit entries")
            }
            for entry in entries {
                print(
                    "\(entry.at.formatted(.iso8601))  \(entry.actor)  \(entry.action)  \(entry.target ?? "-")  \(entry.details.serialized)"
                )
            }
        }
    }
}

/// Records an administrative action of this command line (actor `cli:<user>`) in the audit log, once it succeeded.
/// `details` holds names and counts, never secrets.
func recordAudit(_ client: PostgresClient, _ action: String, target: String? = nil, details: JSONValue = [:]) async throws {
    try await AuditLog(client: client).record(actor: .cli, action: action, target: target, details: details)
}
