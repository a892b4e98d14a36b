import Foundation
import Postgres
import TributaryCollection
import TributaryModel

/// What an API token may do.
public enum APITokenScope: String, Sendable, CaseIterable, Codable, CustomStringConvertible {
    /// `GET /v1/profiles/{kind}/{value}`.
    case profilesRead = "profiles:read"
    /// Privacy requests (`/v1/privacy/…`: deletion, access export, consent): the data protection officer's tools.
    case privacy
    /// Personal data unmasked in the console (without it the console masks what `analyst.*` views mask).
    case pii
    /// Everything, including what later scopes will cover.
    case admin

    public var description: String { rawValue }

    /// Parses a scope name as given on the command line; an unknown one is an error naming it and the valid ones.
    public init(parsing name: String) throws {
        guard let scope = APITokenScope(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
            throw APITokenError(
                "unknown scope '\(name.prefix(100))'; valid scopes are \(Self.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = scope
    }
}

/// A token for the profile and admin APIs (`Authorization: Bearer …`), as stored: never the secret itself.
public struct APIToken: Sendable, Equatable {
    public var id: String
    public var name: String
    /// The first characters of the secret, to tell tokens apart.
    public var hint: String
    public var scopes: [APITokenScope]
    public var createdAt: Date
    public var revokedAt: Date?

    public var isRevoked: Bool { revokedAt != nil }

    /// Whether the token carries `scope`, or `admin`, which covers every scope.
    public func allows(_ scope: APITokenScope) -> Bool { scopes.contains(scope) || scopes.contains(.admin) }
}

/// A failure of an API token command, in one line.
public struct APITokenError: ReportedError {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// API tokens in `cdp.api_tokens`. A secret is `trb_` and 32 random bytes in base64url (47 characters), shown once
/// and stored only as its SHA-256 in hex. Tokens are for reading profiles (and later administration); they are not
/// write keys, and a write key is no token.
///
/// ```swift
/// let store = APITokenStore(client: client)
/// let (token, secret) = try await store.create(name: "support-tool", scopes: [.profilesRead])
/// try await store.authenticate(secret)   // token
/// try await store.revoke(name: "support-tool")
/// try await store.authenticate(secret)   // nil
/// ```
public struct APITokenStore: Sendable {
    let client: PostgresClient

    public init(client: PostgresClient) { self.client = client }

    /// The length of every secret `create` makes.
    public static let secretLength = 47

    /// Creates a token with the given scopes (at least one); returns it with its secret, the only time the secret
    /// is available.
    public func create(name: String, scopes: [APITokenScope]) async throws -> (APIToken, secret: String) {
        let name = try checkedName(name, what: "an API token name", error: APITokenError.init)
        guard !scopes.isEmpty else {
            throw APITokenError(
                "an API token needs at least one scope (\(APITokenScope.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let unique = APITokenScope.allCases.filter(scopes.contains)
        let secret = Self.generateSecret()
        let id = "tok_" + SourceStore.randomToken(length: 16)
        do {
            let rows = try await client.query(
                """
                INSERT INTO cdp.api_tokens (token_id, name, token_sha256, token_hint, scopes)
                VALUES (\(id), \(name), \(Self.hash(secret)), \(Self.hint(secret)), \(unique.map(\.rawValue))::text[])
                RETURNING \(unescaped: Self.columns)
                """)
            return (try Self.token(rows[0]), secret)
        } catch let error as PostgresError where error.sqlState == .uniqueViolation {
            throw APITokenError("an API token named '\(name)' already exists (revoked tokens keep their names)")
        }
    }

    /// Every token, revoked ones included, by name.
    public func list() async throws -> [APIToken] {
        try await client.query("SELECT \(unescaped: Self.columns) FROM cdp.api_tokens ORDER BY name").map(Self.token)
    }

    /// Revokes a token: it is refused (401) from then on, within the server's token cache time. Revoking a revoked
    /// token changes nothing.
    @discardableResult
    public func revoke(name: String) async throws -> APIToken {
        let rows = try await client.query(
            """
            UPDATE cdp.api_tokens SET revoked_at = coalesce(revoked_at, now())
            WHERE name = \(name.trimmingCharacters(in: .whitespacesAndNewlines))
            RETURNING \(unescaped: Self.columns)
            """)
        guard let row = rows.first else { throw APITokenError("there is no API token named '\(name.prefix(100))'") }
        return try Self.token(row)
    }

    /// The unrevoked token a secret belongs to, or nil. Only the secret's SHA-256 reaches the database, where it is
    /// looked up through the unique index: no comparison of secrets happens in memory, so timing reveals nothing
    /// about how much of a secret is right. Anything not shaped like a secret is refused without a query.
    public func authenticate(_ secret: String) async throws -> APIToken? {
        guard Self.looksLikeSecret(secret) else { return nil }
        let rows = try await client.query(
            """
            SELECT \(unescaped: Self.columns) FROM cdp.api_tokens WHERE token_sha256 = \(Self.hash(secret)) AND revoked_at IS NULL
            """)
        return try rows.first.map(Self.token)
    }

    /// SHA-256 of a secret, in hex: what is stored and looked up.
    public static func hash(_ secret: String) -> String { sha256Hex(Data(secret.utf8)) }

    /// Whether `text` has the shape of a secret `create` makes (`trb_` and 43 base64url characters).
    public static func looksLikeSecret(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == secretLength, text.hasPrefix("trb_") else { return false }
        return bytes.dropFirst(4).allSatisfy { byte in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "-")
                || byte == UInt8(ascii: "_")
        }
    }

    /// `trb_` and 32 bytes from the system's cryptographically secure generator, in unpadded base64url.
    static func generateSecret() -> String { "trb_" + randomBase64URL(bytes: 32) }

    /// The first 8 characters of a secret (`trb_` and 4 more), stored to tell tokens apart.
    static func hint(_ secret: String) -> String { String(secret.prefix(8)) }

    static let columns = "token_id, name, token_hint, scopes, created_at, revoked_at"

    static func token(_ row: PostgresRow) throws -> APIToken {
        let (id, name, hint, scopes, created, revoked) = try row.decode((String, String, String, [String], Date, Date?).self)
        // A scope this version does not know (written by a newer one) grants nothing here.
        return APIToken(
            id: id, name: name, hint: hint, scopes: scopes.compactMap(APITokenScope.init(rawValue:)), createdAt: created,
            revokedAt: revoked)
    }
}
