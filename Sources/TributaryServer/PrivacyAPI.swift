import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Postgres
import TributaryCollection
import TributaryGovernance
import TributaryModel
import TributaryProfiles

/// The privacy API, for the data protection officer's tools: `POST /v1/privacy/delete`, `/v1/privacy/export` and
/// `/v1/privacy/consent` with `Authorization: Bearer <API token>` of scope `privacy` (or `admin`) and a JSON body:
///
/// ```json
/// POST /v1/privacy/delete   {"identifier": "email:ann@example.com", "skipDestinations": false}
/// POST /v1/privacy/export   {"identifier": "user_id:u-1"}
/// POST /v1/privacy/consent  {"identifier": "user_id:u-1", "purposes": {"Marketing": false, "Analytics": true}}
/// ```
///
/// | status | when |
/// |---|---|
/// | 200 | done: the deletion's counts, the export document, or the consent event's message id |
/// | 400 | a malformed body or identifier, an unknown field, a hub or refused value, a bad purpose (the message names it) |
/// | 401 | no token, or not a valid unrevoked API token (write keys are not API tokens) |
/// | 403 | a valid token without the `privacy` or `admin` scope |
/// | 413 | a body over 64 KiB |
/// | 502 | a destination failed to delete the person's rows: nothing was deleted, retry |
/// | 503 | the database is unavailable |
///
/// Every request is logged (`cdp.privacy_requests`, the audit log) with the token's name as the actor.
struct PrivacyAPI: Sendable {
    let privacy: PrivacyRequests
    let writer: EventWriter
    let registry: DestinationRegistry
    let logger: Logger

    /// The most bytes a request body may have.
    static let maxBodyBytes = 64 * 1024

    /// - Parameter registry: the destinations deletions are propagated to (a sync whose destination type is not
    ///   registered makes a deletion fail, unless `skipDestinations`).
    init(client: PostgresClient, writer: EventWriter, registry: DestinationRegistry, logger: Logger) {
        privacy = PrivacyRequests(client: client, logger: logger)
        self.writer = writer
        self.registry = registry
        self.logger = logger
    }

    enum Action: String, CaseIterable, Sendable {
        case delete, export, consent

        /// The body fields the action takes.
        var fields: [String] {
            switch self {
            case .delete: ["identifier", "skipDestinations"]
            case .export: ["identifier"]
            case .consent: ["identifier", "purposes"]
            }
        }
    }

    /// Adds the privacy API's routes to `group` (`/v1/privacy`, behind ``TokenAuthMiddleware`` with `privacy`: the
    /// body of an unknown caller is never read).
    func register(on group: RouterGroup<TributaryRequestContext>) {
        for action in Action.allCases {
            group.post("\(action.rawValue)") { request, context in
                guard let token = context.token else { return AdminAuth.unauthorized() }
                return await respond(request, action, token: token)
            }
        }
    }

    private func respond(_ request: Request, _ action: Action, token: APIToken) async -> Response {
        // 1. The token was checked by the middleware. 2. The body.
        var buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: Self.maxBodyBytes)
        } catch {
            return AdminAuth.error(.contentTooLarge, "body_too_large", "the body is larger than \(Self.maxBodyBytes) bytes")
        }
        let body: JSONValue
        do {
            body = try JSONParser.parse(buffer.readBytes(length: buffer.readableBytes) ?? [])
        } catch {
            return Self.badRequest("the body is not valid JSON: \(error)")
        }
        guard case .object(let members) = body else { return Self.badRequest("the body must be a JSON object") }
        if let unknown = members.first(where: { !action.fields.contains($0.0) }) {
            return Self.badRequest(
                "\(unknown.0.prefix(100)): unknown field; known fields are \(action.fields.joined(separator: ", "))")
        }
        guard case .string(let identifier)? = body["identifier"] else {
            return Self.badRequest("identifier: required, a string KIND:VALUE (for example \"email:ann@example.com\")")
        }
        // 3. The request.
        let actor = AuditLog.Actor.token(token.name)
        do {
            switch action {
            case .delete:
                var skip = false
                switch body["skipDestinations"] {
                case nil, .null?: break
                case .bool(let flag)?: skip = flag
                default: return Self.badRequest("skipDestinations: must be true or false")
                }
                let report = try await privacy.delete(
                    identifier: identifier, actor: actor, registry: registry, skipDestinations: skip)
                return CollectionAPI.json(
                    .ok,
                    [
                        "request_id": .number(String(report.requestID)),
                        "profiles": .array(report.profiles.map { .string($0.uuidString.lowercased()) }),
                        "identifiers": .number(String(report.identifiers)),
                        "counts": .object(report.counts.sorted { $0.key < $1.key }.map { ($0.key, .number(String($0.value))) }),
                        "skipped_destinations": .bool(report.skippedDestinations),
                    ])
            case .export:
                let document = try await privacy.export(identifier: identifier, actor: actor)
                var headers = HTTPFields()
                headers[.contentType] = "application/json"
                headers[.cacheControl] = "no-store"
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: document)))
            case .consent:
                guard case .object(let entries)? = body["purposes"] else {
                    return Self.badRequest(
                        "purposes: required, an object of purpose → true or false (for example {\"Marketing\": true})")
                }
                var purposes: [String: Bool] = [:]
                for (name, value) in entries {
                    guard case .bool(let granted) = value else {
                        return Self.badRequest("purposes.\(name.prefix(100)): must be true or false")
                    }
                    purposes[name] = granted
                }
                let receipt = try await privacy.recordConsent(
                    identifier: identifier, purposes: purposes, actor: actor, writer: writer)
                return CollectionAPI.json(
                    .ok,
                    [
                        "request_id": .number(String(receipt.requestID)), "message_id": .string(receipt.messageID),
                        "stored": .bool(receipt.stored),
                    ])
            }
        } catch let error as PrivacyError {
            return Self.badRequest(error.description)
        } catch let error as PrivacyDestinationError {
            return AdminAuth.error(.badGateway, "destination_failed", error.description)
        } catch let error as EventWriter.Overloaded {
            var response = AdminAuth.error(.serviceUnavailable, "overloaded", error.description)
            response.headers[.retryAfter] = "1"
            return response
        } catch {
            logger.error("privacy request failed", metadata: ["action": "\(action.rawValue)", "error": "\(error)"])
            return AdminAuth.unavailable()
        }
    }

    static func badRequest(_ message: String) -> Response { AdminAuth.error(.badRequest, "invalid_request", message) }
}
