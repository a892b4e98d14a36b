import ArgumentParser
import Foundation
import Postgres
import TributaryModel
import TributaryProfiles

extension TributaryCommand {
    struct Tokens: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage API tokens for the profile API (Authorization: Bearer; stored only as SHA-256).",
            subcommands: [Create.self, List.self, Revoke.self])
    }
}

extension TributaryCommand.Tokens {
    /// Runs `body` with a token store on the resolved database (migrated first); then records `audit`, if given.
    static func withStore<T>(
        _ global: GlobalOptions, audit: (action: String, target: String, details: JSONValue)? = nil,
        _ body: (APITokenStore) async throws -> T
    ) async throws -> T {
        try await global.withMigratedClient(logger: global.makeLogger()) { client in
            let result = try await body(APITokenStore(client: client))
            if let audit { try await recordAudit(client, audit.action, target: audit.target, details: audit.details) }
            return result
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API token; prints its secret on the last line.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The token's name, for example 'support-tool'.") var name: String
        @Option(
            name: .customLong("scope"),
            help:
                "A scope to grant (repeatable): \(APITokenScope.allCases.map(\.rawValue).joined(separator: ", ")). Default: profiles:read."
        )
        var scopes: [String] = []

        func run() async throws {
            let granted = scopes.isEmpty ? [.profilesRead] : try scopes.map(APITokenScope.init(parsing:))
            let audit: JSONValue = ["scopes": .array(granted.map { .string($0.rawValue) })]
            let (token, secret) = try await TributaryCommand.Tokens.withStore(global, audit: ("tokens.create", name, audit)) {
                try await $0.create(name: name, scopes: granted)
            }
            print(
                "created API token '\(token.name)' (\(token.id)) with scopes \(token.scopes.map(\.rawValue).joined(separator: ", ")); "
                    + "its secret is shown once, on the next line:")
            print(secret)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List API tokens (never their secrets).")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let tokens = try await TributaryCommand.Tokens.withStore(global) { try await $0.list() }
            if tokens.isEmpty { print("no API tokens; create one with `tributary tokens create NAME`") }
            for token in tokens {
                var line =
                    "\(token.isRevoked ? "revoked" : "active ")  \(token.name)  \(token.id)  \(token.hint)…  "
                    + "\(token.scopes.map(\.rawValue).joined(separator: ","))  created \(token.createdAt.formatted(.iso8601))"
                if let revoked = token.revokedAt { line += "  revoked \(revoked.formatted(.iso8601))" }
                print(line)
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke an API token: it gets 401 from then on (servers cache tokens for up to 5 s).")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        func run() async throws {
            let token = try await TributaryCommand.Tokens.withStore(global, audit: ("tokens.revoke", name, [:])) {
                try await $0.revoke(name: name)
            }
            print("revoked API token '\(token.name)'")
        }
    }
}
