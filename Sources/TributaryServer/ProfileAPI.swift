import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Postgres
import Prometheus
import TributaryGovernance
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributaryRuntime
import TributarySyncs

/// The profile API: `GET /v1/profiles/{kind}/{value}[?events=N]` with `Authorization: Bearer <API token>`, and
/// `GET /v1/profiles/{kind}/{value}/recommendations` (the profile's next-best products: `{"profile_id",
/// "recommendations": [{"product_id", "score", "source"}]}`, the popular products for a profile without product
/// interactions).
///
/// `kind` is an identifier kind (`user_id`, `anonymous_id`, `email`, `phone`, configured kinds) or `profile_id`;
/// `value` is percent-encoded (`/` as `%2F`) and normalized as the identity stage normalizes identifiers. A request
/// is one round trip to PostgreSQL (`cdp.profile_lookup`), which builds the JSON; token lookups are cached.
///
/// | status | when |
/// |---|---|
/// | 200 | the profile document |
/// | 400 | `events` not 0…100, a malformed kind or value, a kind nobody uses (the known ones are listed) |
/// | 401 | no token, or not a valid unrevoked API token (write keys are not API tokens); `WWW-Authenticate: Bearer` |
/// | 403 | a valid token without the `profiles:read` or `admin` scope |
/// | 404 | no profile holds the identifier |
/// | 409 | the identifier is a hub: shared by many people, it identifies no one profile |
/// | 503 | the database is unavailable |
///
/// Errors are `{"code": "...", "error": "..."}`.
struct ProfileAPI: Sendable {
    let documents: ProfileDocuments
    let logger: Logger

    init(client: PostgresClient, replica: ReadReplica? = nil, logger: Logger) {
        documents = ProfileDocuments(client: client, replica: replica)
        self.logger = logger
    }

    /// Adds the profile API's route to `group` (`/v1/profiles`, behind ``TokenAuthMiddleware`` with `profiles:read`:
    /// unknown callers are turned away before anything here runs).
    func register(on group: RouterGroup<TributaryRequestContext>) {
        group.get(":kind/:value") { request, context in
            await respond(request, rawKind: context.parameters.get("kind") ?? "", rawValue: context.parameters.get("value") ?? "")
        }
        group.get(":kind/:value/recommendations") { request, context in
            await respond(
                request, rawKind: context.parameters.get("kind") ?? "", rawValue: context.parameters.get("value") ?? "",
                recommendationsOnly: true)
        }
    }

    /// Answers a request; `rawKind` and `rawValue` are the path components as sent (still percent-encoded).
    /// With `recommendationsOnly`, the answer is `{"profile_id", "recommendations"}` (the document's two members).
    private func respond(
        _ request: Request, rawKind: String, rawValue: String, recommendationsOnly: Bool = false
    ) async
        -> Response
    {
        // The request (the token was checked by the middleware).
        var events = recommendationsOnly ? 0 : ProfileDocuments.defaultEvents
        if !recommendationsOnly, let text = request.uri.queryParameters.get("events") {
            guard let number = Int(text), ProfileDocuments.validEventCount(number) else {
                return Self.error(
                    .badRequest, "invalid_events",
                    "events: must be a whole number from 0 to \(ProfileDocuments.maxEvents), got '\(text.prefix(100))'")
            }
            events = number
        }
        guard let kind = rawKind.removingPercentEncoding else {
            return Self.error(.badRequest, "invalid_kind", "the kind is not valid percent-encoded UTF-8")
        }
        guard let value = rawValue.removingPercentEncoding else {
            return Self.error(.badRequest, "invalid_value", "the value is not valid percent-encoded UTF-8 (encode '%' as %25)")
        }
        // 3. One round trip: PostgreSQL builds the document; its text is the body.
        let lookup: ProfileDocuments.Lookup
        do {
            lookup = try await documents.lookup(kind: kind, value: value, events: events)
        } catch {
            logger.error("profile lookup failed", metadata: ["error": "\(error)"])
            return Self.unavailable()
        }
        switch lookup {
        case .found(var document):
            if recommendationsOnly {
                guard let parsed = try? JSONParser.parse(Array(document.utf8)) else {
                    logger.error("profile lookup returned a document that is not JSON")
                    return Self.unavailable()
                }
                document =
                    JSONValue.object([
                        ("profile_id", parsed["profile_id"] ?? .null),
                        ("recommendations", parsed["recommendations"] ?? .array([])),
                    ]).serialized
            }
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: document)))
        case .notFound:
            return Self.error(.notFound, "not_found", lookup.message ?? "")
        case .hub:
            return Self.error(.conflict, "hub", lookup.message ?? "")
        case .unknownKind:
            return Self.error(.badRequest, "unknown_kind", lookup.message ?? "")
        case .invalidKind:
            return Self.error(.badRequest, "invalid_kind", lookup.message ?? "")
        case .invalidValue:
            return Self.error(.badRequest, "invalid_value", lookup.message ?? "")
        }
    }

    static func error(_ status: HTTPResponse.Status, _ code: String, _ message: String) -> Response {
        AdminAuth.error(status, code, message)
    }

    static func unavailable() -> Response { AdminAuth.unavailable() }
}
