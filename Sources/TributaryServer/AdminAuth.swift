import Foundation
import Hummingbird
import Logging
import Postgres
import TributaryGovernance
import TributaryIdentity
import TributaryProfiles
import TributarySyncs
import TributaryModel

/// Authentication and authorization of the profile and admin APIs: `Authorization: Bearer <API token>`, looked up by
/// its SHA-256 (cached for a few seconds), then checked for a scope (`admin` covers every scope).
///
/// A missing, malformed, unknown or revoked token and a write key all get the same 401, so a caller learns nothing
/// about which keys exist; a valid token without the scope gets 403 naming the scope it needs.
struct AdminAuth: Sendable {
    let tokens: CredentialCache<APIToken>
    let logger: Logger

    init(client: PostgresClient, ttl: Duration, logger: Logger) {
        tokens = CredentialCache(tokens: APITokenStore(client: client), ttl: ttl)
        self.logger = logger
    }

    /// The request's token if it is valid and carries `scope`; otherwise the response to send (401, 403 or 503).
    func authorize(_ request: Request, scope: APITokenScope) async -> Result<APIToken, CollectionAPI.EarlyResponse> {
        guard let secret = Self.bearerToken(request.headers[.authorization]) else {
            return .failure(.init(response: Self.unauthorized()))
        }
        let token: APIToken?
        do {
            token = try await tokens.value(for: secret)
        } catch {
            logger.error("API token lookup failed", metadata: ["error": "\(error)"])
            return .failure(.init(response: Self.unavailable()))
        }
        guard let token else { return .failure(.init(response: Self.unauthorized())) }
        guard token.allows(scope) else {
            return .failure(
                .init(
                    response: Self.error(
                        .forbidden, "forbidden", "this API token does not have the \(scope.rawValue) or admin scope")))
        }
        return .success(token)
    }

    /// The token from `Authorization: Bearer <token>` (scheme case-insensitive), or nil.
    static func bearerToken(_ header: String?) -> String? {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return nil }
        let token = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }

    /// The same answer for a missing, unknown, malformed or revoked token, and for a write key.
    static func unauthorized() -> Response {
        var response = error(.unauthorized, "unauthorized", "a valid API token is required: send Authorization: Bearer <token>")
        response.headers[.wwwAuthenticate] = "Bearer realm=\"tributary\""
        return response
    }

    static func unavailable() -> Response {
        var response = error(.serviceUnavailable, "storage_unavailable", "the database is unavailable; retry")
        response.headers[.retryAfter] = "1"
        return response
    }

    /// `{"code": …, "error": …}` with `Cache-Control: no-store`.
    static func error(_ status: HTTPResponse.Status, _ code: String, _ message: String) -> Response {
        var response = CollectionAPI.json(status, ["code": .string(code), "error": .string(message)])
        response.headers[.cacheControl] = "no-store"
        return response
    }
}
