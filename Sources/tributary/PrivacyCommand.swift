import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryDestinations
import TributaryGovernance
import TributaryProfiles
import TributaryModel

extension TributaryCommand {
    struct PrivacyGroup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "privacy",
            abstract: "Privacy requests about one person: deletion, access export, consent; and the log of requests.",
            discussion: """
                A person is named by one of their identifiers, KIND:VALUE (email:ann@example.com, user_id:u-1, \
                phone:+15550100, profile_id:UUID), normalized as the identity stage normalizes identifiers.
                """,
            subcommands: [Delete.self, Export.self, Consent.self, Requests.self])
    }
}

extension TributaryCommand.PrivacyGroup {
    /// Runs `body` with the privacy requests of the resolved database (migrated first); a refused request is one line.
    static func withRequests<T>(
        _ global: GlobalOptions, _ body: (PrivacyRequests, PostgresClient, Logger) async throws -> T
    ) async throws -> T {
        let logger = global.makeLogger()
        do {
            return try await global.withMigratedClient(logger: logger) { client in
                try await body(PrivacyRequests(client: client, logger: logger), client, logger)
            }
        } catch let error as PrivacyError {
            throw CLIError(error.description)
        } catch let error as PrivacyDestinationError {
            throw CLIError(error.description.replacingOccurrences(of: "skip destinations", with: "use --skip-destinations"))
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete everything held about a person, tell destinations to delete them, and suppress their identifiers.",
            discussion: """
                Deletes their events, identities, profile, traits, consent, segment memberships and sync state, after \
                every sync that delivered them has been told to delete them (if a destination fails, nothing is deleted). \
                Their identifiers are kept only as SHA-256 in cdp.suppressions: later events carrying one are dropped.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The person: KIND:VALUE, for example email:ann@example.com.") var identifier: String
        @Flag(help: "Delete here even though destinations are not told (recorded in the audit log).") var skipDestinations = false

        func run() async throws {
            let report = try await TributaryCommand.PrivacyGroup.withRequests(global) { privacy, _, _ in
                try await privacy.delete(
                    identifier: identifier, actor: .cli, registry: .standard(), skipDestinations: skipDestinations)
            }
            let destinations = report.counts.filter { $0.key.hasPrefix("destinations.") }.sorted { $0.key < $1.key }
                .map { "\($0.key.dropFirst("destinations.".count)): \($0.value)" }
            print(
                "deleted \(report.profiles.count) profile(s) and \(report.counts["events"] ?? 0) events; "
                    + "\(report.identifiers) identifier(s) suppressed; "
                    + (report.skippedDestinations
                        ? "destinations NOT told (--skip-destinations)"
                        : destinations.isEmpty
                            ? "no destination held them" : "destinations told: \(destinations.joined(separator: ", "))")
                    + " (privacy request \(report.requestID))")
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write everything held about a person as one JSON document (an access request).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The person: KIND:VALUE, for example email:ann@example.com.") var identifier: String
        @Option(help: "Write to this file (created readable by its owner only) instead of standard output.") var output: String?

        func run() async throws {
            var handle = FileHandle.standardOutput
            var temporary: String?
            if let output {
                // Written beside the target and renamed into place, so a failed export leaves no partial file.
                let path = output + ".partial-\(ProcessInfo.processInfo.processIdentifier)"
                guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
                    let file = FileHandle(forWritingAtPath: path)
                else {
                    throw CLIError("cannot create \(output)")
                }
                handle = file
                temporary = path
            }
            do {
                let events = try await TributaryCommand.PrivacyGroup.withRequests(global) { privacy, _, _ in
                    try await privacy.export(identifier: identifier, actor: .cli) { chunk in
                        try handle.write(contentsOf: Data(chunk.utf8))
                    }
                }
                if let temporary, let output {
                    try handle.close()
                    if FileManager.default.fileExists(atPath: output) { try FileManager.default.removeItem(atPath: output) }
                    try FileManager.default.moveItem(atPath: temporary, toPath: output)
                    print("wrote the export of \(identifier.prefix(100)) (\(events) events) to \(output)")
                }
            } catch {
                if let temporary {
                    try? handle.close()
                    try? FileManager.default.removeItem(atPath: temporary)
                }
                throw error
            }
        }
    }

    struct Consent: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Record a person's consent: one consent event through the normal ingestion path (history in cdp.consent_changes)."
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The person: KIND:VALUE, for example user_id:u-1.") var identifier: String
        @Option(help: "A purpose the person grants (repeatable), for example Marketing.") var grant: [String] = []
        @Option(help: "A purpose the person denies (repeatable).") var deny: [String] = []

        func run() async throws {
            if grant.isEmpty && deny.isEmpty { throw CLIError("give at least one --grant PURPOSE or --deny PURPOSE") }
            if let both = Set(grant).intersection(deny).sorted().first {
                throw CLIError("'\(both.prefix(100))' is both granted and denied")
            }
            var purposes: [String: Bool] = [:]
            for name in grant { purposes[name] = true }
            for name in deny { purposes[name] = false }
            let receipt = try await TributaryCommand.PrivacyGroup.withRequests(global) { privacy, client, logger in
                let writer = EventWriter(client: client, logger: logger)
                return try await privacy.recordConsent(identifier: identifier, purposes: purposes, actor: .cli, writer: writer)
            }
            print(
                receipt.stored
                    ? "recorded consent (\(purposes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value ? "granted" : "denied")" }.joined(separator: ", "))) "
                        + "as event \(receipt.messageID) (privacy request \(receipt.requestID)); the profile shows it once the stages have run"
                    : "not recorded: the identifier belongs to a deleted person (suppressed) (privacy request \(receipt.requestID))"
            )
        }
    }

    struct Requests: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List recent privacy requests (identifiers only as SHA-256).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "How many, newest first.") var limit = 50

        func run() async throws {
            let requests = try await TributaryCommand.PrivacyGroup.withRequests(global) { privacy, _, _ in
                try await privacy.requests(limit: limit)
            }
            if requests.isEmpty { print("no privacy requests") }
            for request in requests {
                var line =
                    "\(request.id)  \(request.kind)  \(request.status)  \(request.requestedAt.formatted(.iso8601))  \(request.actor)  "
                    + "\(request.identifierKind):\(request.identifierHash.prefix(16))…  \(request.counts.serialized)"
                if let error = request.error { line += "  error: \(error)" }
                print(line)
            }
        }
    }
}
