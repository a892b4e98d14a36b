import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryModel
@testable import TributaryProfiles
@testable import TributaryService

/// API tokens against real PostgreSQL: only hashes are stored, revoked tokens fail, names and scopes are checked.
@Suite struct APITokenTests {
    func withStore(_ body: (APITokenStore, PostgresClient) async throws -> Void) async throws {
        try await TestDatabase.withFreshDatabase { client in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            try await body(APITokenStore(client: client), client)
        }
    }

    @Test func onlyTheHashIsStoredAndRevokedTokensFail() async throws {
        try await withStore { store, client in
            let (token, secret) = try await store.create(name: "  support tool ", scopes: [.profilesRead, .profilesRead])
            #expect(token.name == "support tool" && token.scopes == [.profilesRead] && !token.isRevoked)
            #expect(token.id.hasPrefix("tok_"))
            #expect(
                secret.hasPrefix("trb_") && secret.count == APITokenStore.secretLength && APITokenStore.looksLikeSecret(secret))
            #expect(token.hint == String(secret.prefix(8)))
            // Every column as text: the secret appears nowhere, its SHA-256 does.
            let row = try await client.query("SELECT t::text, token_sha256 FROM cdp.api_tokens AS t").first!
            let (text, hash) = try row.decode((String, String).self)
            #expect(!text.contains(secret) && !text.contains(secret.dropFirst(8)))
            #expect(hash == APITokenStore.hash(secret) && hash.count == 64)

            #expect(try await store.authenticate(secret) == token)
            #expect(try await store.authenticate(secret + "x") == nil)
            #expect(try await store.authenticate(String(secret.dropLast()) + (secret.last == "A" ? "B" : "A")) == nil)
            #expect(try await store.authenticate(APITokenStore.hash(secret)) == nil, "the stored hash is no credential")

            let revoked = try await store.revoke(name: "support tool")
            #expect(revoked.isRevoked)
            #expect(try await store.authenticate(secret) == nil)
            #expect(try await store.revoke(name: "support tool").revokedAt == revoked.revokedAt, "revoking twice changes nothing")
            #expect(try await store.list().map(\.name) == ["support tool"])
        }
    }

    @Test func secretsAreDistinctAndFullyRandomLooking() {
        let secrets = (0..<200).map { _ in APITokenStore.generateSecret() }
        #expect(Set(secrets).count == 200)
        #expect(secrets.allSatisfy(APITokenStore.looksLikeSecret))
        // 43 base64url characters carry 258 bits, of which 256 are random: every position varies.
        let positions = (4..<APITokenStore.secretLength).map { index in Set(secrets.map { Array($0.utf8)[index] }).count }
        #expect(positions.allSatisfy { $0 > 10 })
        for text in [
            "", "trb_", "trb_" + String(repeating: "a", count: 42), "trb_" + String(repeating: "a", count: 42) + "=",
            "xyz_" + String(repeating: "a", count: 43), "trb_" + String(repeating: "é", count: 43),
        ] {
            #expect(!APITokenStore.looksLikeSecret(text), "\(text)")
        }
    }

    @Test func badNamesScopesAndDuplicatesAreRefusedClearly() async throws {
        try await withStore { store, _ in
            func refusal(_ name: String, _ scopes: [APITokenScope] = [.admin]) async -> String {
                do {
                    _ = try await store.create(name: name, scopes: scopes)
                    return ""
                } catch {
                    return "\(error)"
                }
            }
            #expect(await refusal(" \n ") == "an API token name cannot be empty")
            #expect(await refusal(String(repeating: "n", count: 101)) == "an API token name can be at most 100 characters")
            #expect(await refusal("tab\there") == "an API token name cannot contain control characters")
            #expect(await refusal("no-scopes", []).contains("at least one scope (profiles:read, privacy, pii, admin)"))
            #expect(await refusal("ok") == "")
            #expect(await refusal("ok") == "an API token named 'ok' already exists (revoked tokens keep their names)")
            do {
                _ = try await store.revoke(name: "missing")
                Issue.record("revoking an unknown token succeeded")
            } catch {
                #expect("\(error)" == "there is no API token named 'missing'")
            }
        }
        #expect(try APITokenScope(parsing: "profiles:read") == .profilesRead)
        #expect(throws: APITokenError.self) { try APITokenScope(parsing: "profiles:write") }
        do {
            _ = try APITokenScope(parsing: "profiles:write")
        } catch {
            #expect("\(error)" == "unknown scope 'profiles:write'; valid scopes are profiles:read, privacy, pii, admin")
        }
        let reader = APIToken(id: "t", name: "n", hint: "h", scopes: [.profilesRead], createdAt: Date(), revokedAt: nil)
        #expect(reader.allows(.profilesRead) && !reader.allows(.admin))
        #expect(
            APIToken(id: "t", name: "n", hint: "h", scopes: [.admin], createdAt: Date(), revokedAt: nil).allows(.profilesRead))
    }

    @Test func prettyPrintingKeepsMemberOrder() throws {
        let value = try JSONParser.parse(Array(#"{"b":1,"a":[true,{"x":null}],"e":{},"f":[],"s":"q\"uote"}"#.utf8))
        #expect(
            value.prettyPrinted == """
                {
                  "b": 1,
                  "a": [
                    true,
                    {
                      "x": null
                    }
                  ],
                  "e": {},
                  "f": [],
                  "s": "q\\"uote"
                }
                """)
    }

    @Test func lookupOutcomesBecomeMessages() throws {
        let hub = try ProfileDocuments.lookup(
            outcome: "hub", document: #"{"kind":"email","value":"a@b.c","hub_threshold":20}"#, kind: "email", value: "A@b.c")
        #expect(hub == .hub(Identifier(kind: "email", value: "a@b.c"), threshold: 20))
        let unknown = try ProfileDocuments.lookup(
            outcome: "unknown_kind", document: #"{"kind":"x","known_kinds":["email","user_id"]}"#, kind: "x", value: "v")
        #expect(unknown.message == "'x' is not an identifier kind in use or configured; known kinds are email, user_id")
        let long = String(repeating: "v", count: 300)
        let missing = try ProfileDocuments.lookup(
            outcome: "not_found", document: #"{"kind":"user_id","value":"\#(long)","problem":"too_long"}"#, kind: "user_id",
            value: long)
        #expect(missing.message == "no profile has the identifier user_id:\(long.prefix(100))… (it would be ignored: too long)")
        #expect(throws: PostgresError.self) {
            try ProfileDocuments.lookup(outcome: "surprise", document: nil, kind: "k", value: "v")
        }
    }
}
