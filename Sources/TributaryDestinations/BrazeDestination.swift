import Foundation
import Logging
import TributaryGovernance
import TributaryModel
import TributarySyncs

/// Delivers rows to Braze user profiles through its REST API.
///
/// Settings: `endpoint` (required: the REST endpoint of the Braze instance, e.g. `https://rest.iad-01.braze.com`),
/// `apiKey` (required, a REST API key with the `users.track` and, for deletes, `users.delete` permissions; usually
/// `env:BRAZE_API_KEY`), `externalIdField` (the key column or field holding the Braze `external_id`; default: the
/// first primary-key column), `audienceAttribute` (a boolean custom attribute for audience syncs: `add` sets it to
/// `true`, `remove` to `false`).
///
/// Requests, as documented by Braze:
/// - `upsert`, `insert`, `update`, `add` and `remove` become user attributes objects sent to `POST /users/track`
///   (https://www.braze.com/docs/api/endpoints/user_data/post_user_track/), at most 75 attributes objects per request,
///   with `Authorization: Bearer <key>` and a JSON body `{"attributes": [{"external_id": "…", <fields>}]}`
///   (user attributes object: https://www.braze.com/docs/api/objects_filters/user_attributes_object/). An `update`
///   sets `"_update_existing_only": true` ("Update Only" mode: Braze does not create the user). The mapped fields
///   are sent as attributes, except the field the `external_id` was read from (it is the identifier, not an
///   attribute). An `add` also sets `audienceAttribute` to `true` when configured; a `remove` sends only
///   `audienceAttribute: false`, and is rejected for the row when no `audienceAttribute` is configured (there is
///   nothing else to undo in Braze, and a silent no-op would hide the misconfiguration).
/// - `delete` becomes `POST /users/delete` with `{"external_ids": […]}`
///   (https://www.braze.com/docs/api/endpoints/user_data/post_user_delete/), at most 50 ids per request. Braze
///   queues the deletion and answers `{"deleted": n}`; an id Braze does not know is gone already, so every id of a
///   2xx answer counts as delivered.
///
/// A batch (at most 75 changes) is sent as consecutive runs of the same kind in batch order, each run split at 75
/// attributes objects or 50 ids, so a batch mixing operations takes several requests. When one of them fails the
/// whole batch fails (the runner retries it; Braze's attribute updates and deletes are idempotent).
///
/// Answers (https://www.braze.com/docs/api/errors/): a 2xx with `"message": "success"` (or `"queued"`, during
/// maintenance) confirms the request; the non-fatal errors of `/users/track` come as
/// `{"message": "success", "errors": [{"type": "…", "input_array": "attributes", "index": 3}]}`, where `index` is
/// the position in `attributes`: those rows are rejected with Braze's `type` text, the others delivered. A 2xx whose
/// `message` is anything else is a fatal error. 400, 401, 403, 404 and other 4xx fail the batch without retry,
/// naming the status and Braze's `message` (never the API key); 429 and 5xx are retried by ``HTTPSender``.
public struct BrazeDestination: Destination {
    /// One Braze workspace: its endpoint and API key (hashed).
    public var account: String? { "braze:\(endpoint):" + sha256Hex(Data(apiKey.utf8), bytes: 8) }
    let sender: HTTPSender
    let endpoint: String
    let apiKey: String
    let externalIdField: String?
    let audienceAttribute: String?
    let logger: Logger

    /// `/users/track`: "up to 75 attribute objects" per request.
    public static let attributesPerRequest = 75
    /// `/users/delete`: "Up to 50 `external_ids` … can be included in a single request."
    public static let deletesPerRequest = 50

    public var maxBatchSize: Int { Self.attributesPerRequest }

    public static let keys = ["type", "endpoint", "apiKey", "externalIdField", "audienceAttribute"]

    public static func validate(_ settings: JSONValue) throws {
        guard let endpointValue = settings["endpoint"], endpointValue != .null else {
            throw SyncError(
                "destination.endpoint: required, the REST endpoint of the Braze instance (https://rest.iad-01.braze.com)")
        }
        guard case .string(let endpoint) = endpointValue,
            endpoint.hasPrefix("https://") || endpoint.hasPrefix("http://") || endpoint.hasPrefix("env:")
        else {
            throw SyncError(
                "destination.endpoint: must be an https:// URL, the REST endpoint of the Braze instance (https://rest.iad-01.braze.com)"
            )
        }
        try checkString(settings, "apiKey", required: true)
        try checkString(settings, "externalIdField", required: false)
        try checkString(settings, "audienceAttribute", required: false)
        if let unknown = settings.objectKeys.first(where: { !keys.contains($0) }) {
            throw SyncError("destination.\(unknown): unknown setting for braze (\(keys.dropFirst().joined(separator: ", ")))")
        }
    }

    /// A string setting: `destination.<key>: required` when missing, `must be a non-empty string` when not one.
    static func checkString(_ settings: JSONValue, _ key: String, required: Bool) throws {
        switch settings[key] {
        case nil, .null?:
            if required { throw SyncError("destination.\(key): required") }
        case .string(let text)? where !text.isEmpty:
            break
        default:
            throw SyncError("destination.\(key): must be a non-empty string")
        }
    }

    public init(_ context: DestinationContext, sender: HTTPSender = HTTPSender()) throws {
        try Self.validate(context.settings)
        var endpoint = try context.string("endpoint")!
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        guard endpoint.hasPrefix("https://") || endpoint.hasPrefix("http://") else {
            throw SyncError("destination.endpoint: must be an https:// URL, the REST endpoint of the Braze instance")
        }
        self.endpoint = endpoint
        apiKey = try context.string("apiKey")!
        externalIdField = try context.string("externalIdField", required: false)
        audienceAttribute = try context.string("audienceAttribute", required: false)
        self.sender = sender
        logger = context.logger
    }

    /// What one change becomes.
    enum Item {
        case attributes(JSONValue)
        case delete(String)
    }

    /// One request: the batch positions it carries and what it carries for each.
    struct Request {
        var isDelete: Bool
        var items: [(index: Int, item: JSONValue)] = []
    }

    /// The Braze `external_id` of a change, or why there is none; `fromFields` tells whether it came from the fields.
    func externalID(_ change: SyncChange) -> (id: String?, fromFields: Bool, problem: String?) {
        guard let field = externalIdField ?? change.key.objectKeys.first else {
            return (nil, false, "no external_id: the change has no key column (set destination.externalIdField)")
        }
        var value: JSONValue?
        var fromFields = false
        if let keyValue = change.key[field], keyValue != .null {
            value = keyValue
        } else if let fieldValue = change.fields[field], fieldValue != .null {
            value = fieldValue
            fromFields = true
        }
        switch value {
        case .string(let text)? where !text.isEmpty: return (text, fromFields, nil)
        case .number(let text)?: return (text, fromFields, nil)
        case nil: return (nil, false, "no external_id: '\(field)' is missing or null")
        default: return (nil, false, "no external_id: '\(field)' must be a non-empty string or a number")
        }
    }

    /// The request item for a change, or the reason the row is rejected without being sent.
    func item(for change: SyncChange) -> Result<Item, SyncError> {
        let (id, fromFields, problem) = externalID(change)
        guard let id else { return .failure(SyncError(problem ?? "no external_id")) }
        if change.operation == .delete { return .success(.delete(id)) }
        var members: [(String, JSONValue)] = [("external_id", .string(id))]
        if change.operation == .update { members.append(("_update_existing_only", .bool(true))) }
        switch change.operation {
        case .remove:
            guard let audienceAttribute else {
                return .failure(SyncError("remove needs destination.audienceAttribute (the boolean attribute to set to false)"))
            }
            members.append((audienceAttribute, .bool(false)))
        default:
            let skipped = Set(members.map(\.0) + (fromFields ? [externalIdField ?? ""] : []) + [audienceAttribute ?? ""])
            for (name, value) in change.fields.objectMembers where !skipped.contains(name) {
                members.append((name, value))
            }
            if change.operation == .add, let audienceAttribute { members.append((audienceAttribute, .bool(true))) }
        }
        return .success(.attributes(.object(members)))
    }

    public func send(_ batch: [SyncChange]) async throws -> [ChangeResult] {
        var results = [ChangeResult](repeating: .delivered, count: batch.count)
        // Consecutive runs of the same kind, in batch order, split at the per-request limits.
        var requests: [Request] = []
        for (index, change) in batch.enumerated() {
            switch item(for: change) {
            case .failure(let problem):
                results[index] = .rejected(problem.description)
            case .success(let item):
                let (isDelete, value): (Bool, JSONValue) =
                    switch item {
                    case .attributes(let object): (false, object)
                    case .delete(let id): (true, .string(id))
                    }
                let limit = isDelete ? Self.deletesPerRequest : Self.attributesPerRequest
                if let last = requests.last, last.isDelete == isDelete, last.items.count < limit {
                    requests[requests.count - 1].items.append((index, value))
                } else {
                    requests.append(Request(isDelete: isDelete, items: [(index, value)]))
                }
            }
        }
        for request in requests {
            let rejected = try await post(request)
            for (position, reason) in rejected { results[request.items[position].index] = .rejected(reason) }
        }
        return results
    }

    /// Sends one request; returns the rejected rows by position in the request.
    func post(_ request: Request) async throws -> [Int: String] {
        let path = request.isDelete ? "/users/delete" : "/users/track"
        let body: JSONValue =
            request.isDelete
            ? .object([("external_ids", .array(request.items.map(\.item)))])
            : .object([("attributes", .array(request.items.map(\.item)))])
        var bytes: [UInt8] = []
        body.write(to: &bytes)
        let url = endpoint + path
        let headers = [
            ("Content-Type", "application/json"), ("Authorization", "Bearer \(apiKey)"),
            ("User-Agent", "tributary/\(Tributary.version)"),
        ]
        let response: HTTPSender.Response
        do {
            response = try await sender.send("POST", url, headers: headers, body: bytes)
        } catch let error as DestinationError {
            throw DestinationError(redacted(error.description), retryable: error.retryable, retryAfter: error.retryAfter)
        }
        let answer = response.body.isEmpty ? nil : try? JSONParser.parse(response.body)
        guard (200..<300).contains(response.status) else {
            throw DestinationError(
                "POST \(url): HTTP \(response.status)\(Self.statusNames[response.status].map { " \($0)" } ?? ""): "
                    + redacted(Self.message(answer, response.text)), retryable: false)
        }
        guard let answer else { return [:] }  // A 2xx without a JSON body: accepted.
        if case .string(let message)? = answer["message"], message != "success", message != "queued" {
            throw DestinationError(
                "POST \(url): HTTP \(response.status) with a fatal error: " + redacted(Self.message(answer, response.text)),
                retryable: false)
        }
        guard case .array(let errors)? = answer["errors"], !errors.isEmpty else { return [:] }
        var rejected: [Int: String] = [:]
        var unattributed: [String] = []
        for error in errors {
            let arrayName: String? = if case .string(let name)? = error["input_array"] { name } else { nil }
            if !request.isDelete, arrayName == nil || arrayName == "attributes",
                case .number(let text)? = error["index"], let position = Int(text), request.items.indices.contains(position)
            {
                let reason: String = if case .string(let type)? = error["type"] { type } else { error.serialized }
                rejected[position] = redacted(reason)
            } else {
                unattributed.append(redacted(error.serialized))
            }
        }
        if !unattributed.isEmpty {
            logger.warning(
                "braze: POST \(path) answered errors that name no row: \(unattributed.joined(separator: "; ").prefix(500))")
        }
        return rejected
    }

    /// Braze's `message` (and `errors`), or the start of the body.
    static func message(_ answer: JSONValue?, _ text: String) -> String {
        var parts: [String] = []
        if case .string(let message)? = answer?["message"] { parts.append(message) }
        if case .array(let errors)? = answer?["errors"], !errors.isEmpty {
            parts.append("errors: \(JSONValue.array(errors).serialized)")
        }
        let message = parts.isEmpty ? String(text.prefix(200)) : parts.joined(separator: "; ")
        return String(message.prefix(500))
    }

    /// Names of the statuses of Braze's fatal errors table (https://www.braze.com/docs/api/errors/#fatal-errors).
    static let statusNames = [400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"]

    /// The text without the API key, should Braze ever echo it.
    func redacted(_ text: String) -> String {
        apiKey.isEmpty ? text : text.replacingOccurrences(of: apiKey, with: "<apiKey>")
    }
}
