import Crypto
import Foundation
import Synchronization
import TributaryModel
import TributarySyncs

/// A destination defined in the sync file: any HTTP API, without code.
///
/// ```json
/// "destination": {
///   "type": "http",
///   "request": {"method": "POST", "url": "https://api.example.com/contacts/batch",
///               "headers": {"X-Version": "2"},
///               "body": {"inputs": {"$rows": {"id": "{{email}}", "properties": {"plan": "{{plan}}"}}}}},
///   "requests": {"delete": {"method": "POST", "url": "https://api.example.com/contacts/batch/archive",
///                           "body": {"inputs": {"$rows": {"id": "{{email}}"}}}}},
///   "auth": {"type": "bearer", "token": "env:EXAMPLE_TOKEN"},
///   "maxBatchSize": 100, "timeoutSeconds": 30,
///   "rejectStatuses": [400, 422],
///   "rowErrors": {"path": "errors", "match": {"field": "email", "value": "context.ids.0"}, "reason": "message"}
/// }
/// ```
///
/// - `request`: the request for every operation (`method` default POST, `url`, `headers`, `body`: an
///   ``HTTPTemplate``); `requests.OPERATION` replaces parts of it for one operation (`upsert`, `update`, `insert`,
///   `delete`, `add`, `remove`). A body with `$rows` is one request per batch (changes of one operation each);
///   without, one request per row (its URL may then name the row: `/contacts/{{key.id}}`). No body: no payload
///   (a `DELETE`, say).
/// - `auth`: `{"type": "bearer", "token"}`, `{"type": "basic", "username", "password"}`, `{"type": "header",
///   "name", "value"}`, or `{"type": "oauth2", "tokenUrl", "clientId", "clientSecret", "scope"?, "refreshToken"?}`
///   (client credentials, or the refresh-token grant when `refreshToken` is given; the token is kept until a minute
///   before it expires, and fetched again after a 401). Any value may be `env:NAME`.
/// - Responses: 2xx delivers the rows (minus those `rowErrors` lists); a status in `rejectStatuses` rejects every
///   row of that request with the response's message; 429, 5xx, a status in `retryStatuses` (an API's own
///   "try again", such as 409 or 423), timeouts and connection failures are retried (with `Retry-After`); any other
///   status fails the batch.
/// - `rowErrors`: where a 2xx answer lists refused rows: `path` (dots; numbers index arrays; `$` the answer itself)
///   to an array whose items name a row by its position in the request (`index`: the item's path to it), by a value
///   (`match`: `field`, a field of the sync, equal to the item's `value` path), or by their own position, one item
///   per row with a success flag (`ok`: the item's path to it; not `true` is a refusal), with the reason at
///   `reason` (default `message`).
///
/// Every `{{name}}` is checked against the sync's fields when the file is applied.
public struct HTTPDestination: Destination {
    public static let keys = [
        "type", "request", "requests", "auth", "maxBatchSize", "timeoutSeconds", "rejectStatuses", "retryStatuses",
        "rowErrors",
    ]
    static let requestKeys = ["method", "url", "headers", "body"]
    static let methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    /// One operation's request, parsed.
    struct RequestSpec: Sendable {
        var method: String
        var url: HTTPTemplate
        var headers: [(String, HTTPTemplate)]
        var body: HTTPTemplate?
        var isBatch: Bool { body?.isBatch ?? false }
    }

    /// Where a 2xx answer lists refused rows.
    struct RowErrors: Sendable {
        var path: [String]
        var index: [String]?
        var matchField: String?
        var matchValue: [String]?
        /// Positional answers: the list has one item per row, in order, and an item whose value at this path is
        /// not `true` is a refusal (Salesforce's `[{"success": false, "errors": […]}, …]`).
        var ok: [String]?
        var reason: [String]
    }

    enum Auth: Sendable {
        case none
        case header(String, String)
        case oauth2(OAuth2Client)
    }

    let context: DestinationContext
    let sender: HTTPSender
    let base: RequestSpec
    let overrides: [SyncOperation: RequestSpec]
    let auth: Auth
    let rejectStatuses: Set<Int>
    /// 4xx statuses that mean "try again" for this API (beyond 429): the batch is retried with backoff.
    let retryStatuses: Set<Int>
    let rowErrors: RowErrors?
    public let maxBatchSize: Int
    public let account: String?

    // MARK: Checking the file

    /// Checks the settings alone (shape, methods, URLs, statuses); names are checked by ``validate(sync:)``.
    public static func validate(_ settings: JSONValue) throws {
        if let unknown = settings.objectKeys.first(where: { !keys.contains($0) }) {
            throw SyncError(
                "destination.\(unknown): unknown setting for an http destination (\(keys.dropFirst().joined(separator: ", ")))")
        }
        guard case .object? = settings["request"] else {
            throw SyncError("destination.request: required, an object with method, url, headers, body")
        }
        _ = try spec(settings["request"]!, base: nil, at: "destination.request")
        if let requests = settings["requests"], requests != .null {
            guard case .object(let members) = requests else {
                throw SyncError("destination.requests: an object of operation → request")
            }
            let base = try spec(settings["request"]!, base: nil, at: "destination.request")
            for (name, value) in members {
                guard SyncOperation(rawValue: name) != nil else {
                    throw SyncError(
                        "destination.requests.\(name): unknown operation; use \(SyncOperation.allCases.map(\.rawValue).joined(separator: ", "))"
                    )
                }
                _ = try spec(value, base: base, at: "destination.requests.\(name)")
            }
        }
        _ = try authSettings(settings["auth"], context: nil)
        let rejected = try statuses(settings["rejectStatuses"])
        let retried = try statuses(settings["retryStatuses"], key: "retryStatuses")
        if let both = rejected.intersection(retried).min() {
            throw SyncError("destination.retryStatuses: \(both) is also in rejectStatuses; a status means one thing")
        }
        _ = try rowErrors(settings["rowErrors"])
        for key in ["maxBatchSize", "timeoutSeconds"] {
            if let value = settings[key], value != .null {
                guard case .number(let text) = value, let number = Double(text), number > 0, number <= 100_000 else {
                    throw SyncError("destination.\(key): a positive number")
                }
            }
        }
    }

    /// Checks every `{{name}}` against the sync: its fields (a mapping is required: templates name fields), its key
    /// columns, and whether a name that reads a row is used where there is one.
    public static func validate(sync: SyncDefinition) throws {
        guard let fields = sync.fields?.map(\.name) else {
            throw SyncError(
                "fields: an http destination needs the sync's fields mapping (its templates name the fields they send)")
        }
        let settings = sync.destination
        var specs = [("destination.request", try spec(settings["request"]!, base: nil, at: "destination.request"))]
        let base = specs[0].1
        for (name, value) in settings["requests"]?.objectMembers ?? [] {
            specs.append(("destination.requests.\(name)", try spec(value, base: base, at: "destination.requests.\(name)")))
        }
        for (path, spec) in specs {
            let perRow = !spec.isBatch
            try spec.url.validate(fields: fields, keys: sync.primaryKey, rowsAllowed: perRow, at: "\(path).url")
            for (name, header) in spec.headers {
                try header.validate(fields: fields, keys: sync.primaryKey, rowsAllowed: perRow, at: "\(path).headers.\(name)")
            }
            try spec.body?.validate(fields: fields, keys: sync.primaryKey, rowsAllowed: perRow, at: "\(path).body")
        }
        if let match = try rowErrors(settings["rowErrors"])?.matchField, !fields.contains(match) {
            throw SyncError(
                "destination.rowErrors.match.field: '\(match)' is not one of the sync's fields (\(fields.joined(separator: ", ")))"
            )
        }
    }

    static func spec(_ value: JSONValue, base: RequestSpec?, at path: String) throws -> RequestSpec {
        guard case .object(let members) = value else { throw SyncError("\(path): an object with method, url, headers, body") }
        if let unknown = members.first(where: { !requestKeys.contains($0.0) }) {
            throw SyncError("\(path).\(unknown.0): unknown key; known keys are \(requestKeys.joined(separator: ", "))")
        }
        var method = base?.method ?? "POST"
        if let raw = value["method"], raw != .null {
            guard case .string(let text) = raw, methods.contains(text.uppercased()) else {
                throw SyncError("\(path).method: one of \(methods.joined(separator: ", "))")
            }
            method = text.uppercased()
        }
        let url: HTTPTemplate
        if case .string(let text)? = value["url"] {
            guard text.hasPrefix("https://") || text.hasPrefix("http://") else {
                throw SyncError("\(path).url: an http:// or https:// URL")
            }
            url = try HTTPTemplate(text: text, at: "\(path).url")
        } else if let inherited = base?.url, value["url"] == nil {
            url = inherited
        } else {
            throw SyncError("\(path).url: required, an http:// or https:// URL")
        }
        var headers = base?.headers ?? []
        if let raw = value["headers"], raw != .null {
            guard case .object(let entries) = raw else {
                throw SyncError("\(path).headers: an object of header names to strings")
            }
            for (name, item) in entries {
                guard case .string(let text) = item else { throw SyncError("\(path).headers.\(name): must be a string") }
                headers.removeAll { $0.0.lowercased() == name.lowercased() }
                headers.append((name, try HTTPTemplate(text: text, at: "\(path).headers.\(name)")))
            }
        }
        var body = base?.body
        if let raw = value["body"] { body = raw == .null ? nil : try HTTPTemplate(parsing: raw, at: "\(path).body") }
        return RequestSpec(method: method, url: url, headers: headers, body: body)
    }

    /// A list of 4xx statuses (429 is always retried, 5xx always retried, 2xx always success).
    static func statuses(_ value: JSONValue?, key: String = "rejectStatuses") throws -> Set<Int> {
        guard let value, value != .null else { return [] }
        guard case .array(let items) = value else { throw SyncError("destination.\(key): a list of HTTP statuses") }
        return Set(
            try items.map { item in
                guard case .number(let text) = item, let status = Int(text), (400..<500).contains(status), status != 429 else {
                    throw SyncError("destination.\(key): 4xx statuses other than 429 (which is always retried)")
                }
                return status
            })
    }

    static func rowErrors(_ value: JSONValue?) throws -> RowErrors? {
        guard let value, value != .null else { return nil }
        func path(_ item: JSONValue?, _ name: String) throws -> [String]? {
            guard let item, item != .null else { return nil }
            guard case .string(let text) = item, !text.isEmpty else {
                throw SyncError("destination.rowErrors.\(name): a path such as errors or context.ids.0 ($ for the answer itself)")
            }
            return text == "$" ? [] : text.split(separator: ".").map(String.init)
        }
        guard case .object = value, let list = try path(value["path"], "path") else {
            throw SyncError("destination.rowErrors.path: required, the path of the list of refused rows in the answer")
        }
        let index = try path(value["index"], "index")
        var field: String?, match: [String]?
        if let raw = value["match"], raw != .null {
            guard case .string(let name)? = raw["field"], let valuePath = try path(raw["value"], "match.value") else {
                throw SyncError("destination.rowErrors.match: {\"field\": a field of the sync, \"value\": the item's path to it}")
            }
            field = name
            match = valuePath
        }
        let ok = try path(value["ok"], "ok")
        guard [index != nil, field != nil, ok != nil].filter({ $0 }).count == 1 else {
            throw SyncError(
                "destination.rowErrors: give index (the row's position), match (a field's value) or ok (one item per row, "
                    + "in order, with a success flag), one of them")
        }
        return RowErrors(
            path: list, index: index, matchField: field, matchValue: match, ok: ok,
            reason: try path(value["reason"], "reason") ?? ["message"])
    }

    static func authSettings(_ value: JSONValue?, context: DestinationContext?) throws -> Auth {
        guard let value, value != .null else { return .none }
        guard case .string(let type)? = value["type"] else {
            throw SyncError("destination.auth.type: bearer, basic, header or oauth2")
        }
        let allowed: [String: [String]] = [
            "bearer": ["token"], "basic": ["username", "password"], "header": ["name", "value"],
            "oauth2": ["tokenUrl", "clientId", "clientSecret", "scope", "refreshToken"],
        ]
        guard let keys = allowed[type] else {
            throw SyncError("destination.auth.type: bearer, basic, header or oauth2, not '\(type)'")
        }
        if let unknown = value.objectKeys.first(where: { $0 != "type" && !keys.contains($0) }) {
            throw SyncError("destination.auth.\(unknown): unknown for \(type) auth (\(keys.joined(separator: ", ")))")
        }
        var nested = context ?? DestinationContext(sync: "", runID: 0, settings: value, environment: [:])
        nested.settings = value
        func setting(_ key: String, required: Bool = true) throws -> String? {
            guard context != nil else {
                if required, value[key] == nil { throw SyncError("destination.auth.\(key): required") }
                return nil
            }
            do { return try nested.string(key, required: required) } catch let error as SyncError {
                throw SyncError(error.description.replacingOccurrences(of: "destination.", with: "destination.auth."))
            }
        }
        switch type {
        case "bearer":
            let token = try setting("token")
            return token.map { .header("Authorization", "Bearer \($0)") } ?? .none
        case "basic":
            let (user, password) = (try setting("username"), try setting("password"))
            guard let user, let password else { return .none }
            return .header("Authorization", "Basic " + Data("\(user):\(password)".utf8).base64EncodedString())
        case "header":
            let (name, header) = (try setting("name"), try setting("value"))
            guard let name, let header else { return .none }
            return .header(name, header)
        default:
            let (url, id, secret) = (try setting("tokenUrl"), try setting("clientId"), try setting("clientSecret"))
            let (scope, refresh) = (try setting("scope", required: false), try setting("refreshToken", required: false))
            guard let url, let id, let secret else { return .none }
            guard url.hasPrefix("https://") || url.hasPrefix("http://") else {
                throw SyncError("destination.auth.tokenUrl: an http:// or https:// URL")
            }
            return .oauth2(OAuth2Client(tokenURL: url, clientID: id, clientSecret: secret, scope: scope, refreshToken: refresh))
        }
    }

    // MARK: Running

    public init(_ context: DestinationContext, sender: HTTPSender = HTTPSender()) throws {
        try Self.validate(context.settings)
        self.context = context
        base = try Self.spec(context.settings["request"]!, base: nil, at: "destination.request")
        var overrides: [SyncOperation: RequestSpec] = [:]
        for (name, value) in context.settings["requests"]?.objectMembers ?? [] {
            overrides[SyncOperation(rawValue: name)!] = try Self.spec(value, base: base, at: "destination.requests.\(name)")
        }
        self.overrides = overrides
        auth = try Self.authSettings(context.settings["auth"], context: context)
        rejectStatuses = try Self.statuses(context.settings["rejectStatuses"])
        retryStatuses = try Self.statuses(context.settings["retryStatuses"], key: "retryStatuses")
        rowErrors = try Self.rowErrors(context.settings["rowErrors"])
        var sender = sender
        if case .number(let text)? = context.settings["timeoutSeconds"], let seconds = Double(text) {
            sender.timeout = .milliseconds(Int64(seconds * 1000))
        }
        self.sender = sender
        if case .number(let text)? = context.settings["maxBatchSize"], let size = Double(text) {
            maxBatchSize = max(1, Int(size))
        } else {
            maxBatchSize = 100
        }
        // One API account: the request URL's origin and the credential, hashed (no secret in the key).
        let origin = base.url.renderText(HTTPTemplate.Scope(sync: context.sync, runID: 0, rows: []))
            .split(separator: "/", omittingEmptySubsequences: false).prefix(3).joined(separator: "/")
        let credential: String =
            switch auth {
            case .none: ""
            case .header(let name, let value): name + value
            case .oauth2(let client): client.tokenURL + client.clientID
            }
        account = "http:" + sha256Hex(Data((origin + "\u{1}" + credential).utf8), bytes: 8)
    }

    public func send(_ batch: [SyncChange]) async throws -> [ChangeResult] {
        var results = [ChangeResult?](repeating: nil, count: batch.count)
        // Changes of one operation go together, in the order they came.
        var order: [SyncOperation] = []
        var groups: [SyncOperation: [Int]] = [:]
        for (index, change) in batch.enumerated() {
            if groups[change.operation] == nil { order.append(change.operation) }
            groups[change.operation, default: []].append(index)
        }
        for operation in order {
            let spec = overrides[operation] ?? base
            let indices = groups[operation]!
            let requests = spec.isBatch ? [indices] : indices.map { [$0] }
            for rows in requests {
                let outcome = try await exchange(spec, rows.map { batch[$0] })
                for (position, index) in rows.enumerated() { results[index] = outcome[position] }
            }
        }
        return results.map { $0 ?? .delivered }
    }

    /// One request for `rows` (all of a batch request, or the one row of a per-row request), with one result per row.
    func exchange(_ spec: RequestSpec, _ rows: [SyncChange]) async throws -> [ChangeResult] {
        let scope = HTTPTemplate.Scope(sync: context.sync, runID: context.runID, rows: rows)
        let url = spec.url.renderText(scope, encode: percentEncoded)
        var headers: [(String, String)] = [("User-Agent", "tributary/\(Tributary.version)")]
        var body: [UInt8]?
        if let template = spec.body {
            var bytes: [UInt8] = []
            template.render(scope).write(to: &bytes)
            body = bytes
            headers.append(("Content-Type", "application/json"))
        }
        if rows.count == 1 { headers.append(("Idempotency-Key", rows[0].idempotencyKey)) }
        // The definition's headers replace Tributary's of the same name (a vendor's own content type, say).
        for (name, template) in spec.headers {
            headers.removeAll { $0.0.lowercased() == name.lowercased() }
            headers.append((name, template.renderText(scope)))
        }
        var refreshed = false
        while true {
            var sent = headers
            switch auth {
            case .none: break
            case .header(let name, let value): sent.append((name, value))
            case .oauth2(let client): sent.append(("Authorization", "Bearer " + (try await client.token(sender: sender))))
            }
            let response = try await sender.send(spec.method, url, headers: sent, body: body)
            if response.status == 401, case .oauth2(let client) = auth, !refreshed {
                await client.forget()
                refreshed = true
                continue
            }
            if retryStatuses.contains(response.status) {
                throw DestinationError(
                    "\(spec.method) \(HTTPSender.redacted(url)): HTTP \(response.status) \(Self.message(response))",
                    retryable: true,
                    retryAfter: response.headers.first { $0.0.lowercased() == "retry-after" }.flatMap {
                        HTTPSender.retryAfter($0.1)
                    })
            }
            if rejectStatuses.contains(response.status) {
                let reason = "HTTP \(response.status): \(Self.message(response))"
                return rows.map { _ in .rejected(reason) }
            }
            guard (200..<300).contains(response.status) else {
                throw DestinationError(
                    "\(spec.method) \(HTTPSender.redacted(url)): HTTP \(response.status) \(Self.message(response))",
                    retryable: false)
            }
            return try refusals(response, rows)
        }
    }

    /// The rows a 2xx answer lists as refused (``RowErrors``); the rest are delivered.
    func refusals(_ response: HTTPSender.Response, _ rows: [SyncChange]) throws -> [ChangeResult] {
        var results = [ChangeResult](repeating: .delivered, count: rows.count)
        guard let rowErrors, !response.body.isEmpty, let answer = try? JSONParser.parse(response.body),
            case .array(let items)? = Self.lookup(answer, rowErrors.path)
        else { return results }
        for (position, item) in items.enumerated() {
            let reason = Self.lookup(item, rowErrors.reason).map(\.plainText) ?? "rejected by the destination"
            if let okPath = rowErrors.ok {
                if rows.indices.contains(position), Self.lookup(item, okPath) != .bool(true) {
                    results[position] = .rejected(reason)
                }
            } else if let indexPath = rowErrors.index {
                guard case .number(let text)? = Self.lookup(item, indexPath), let index = Int(text), rows.indices.contains(index)
                else {
                    continue
                }
                results[index] = .rejected(reason)
            } else if let field = rowErrors.matchField, let valuePath = rowErrors.matchValue,
                let value = Self.lookup(item, valuePath).map(\.plainText)
            {
                for (index, row) in rows.enumerated()
                where row.fields[field].map(\.plainText)?.lowercased() == value.lowercased() {
                    results[index] = .rejected(reason)
                }
            }
        }
        return results
    }

    /// The value at a dotted path (numbers index arrays).
    static func lookup(_ value: JSONValue, _ path: [String]) -> JSONValue? {
        var current = value
        for step in path {
            switch current {
            case .object: guard let next = current[step] else { return nil }; current = next
            case .array(let items):
                guard let index = Int(step), items.indices.contains(index) else { return nil }; current = items[index]
            default: return nil
            }
        }
        return current
    }

    /// A short reason from an error answer: its `message`, `error`, `detail` or `title` (or `error.message`), else
    /// the first of its `errors` list's (JSON:API and most REST APIs), else the text.
    static func message(_ response: HTTPSender.Response) -> String {
        func reason(_ value: JSONValue) -> String? {
            for key in ["message", "error", "detail", "title"] {
                if case .string(let text)? = value[key] { return String(text.prefix(300)) }
                if case .string(let text)? = value[key]?["message"] { return String(text.prefix(300)) }
            }
            return nil
        }
        if let answer = try? JSONParser.parse(response.body) {
            if let text = reason(answer) { return text }
            if case .array(let errors)? = answer["errors"], let first = errors.first, let text = reason(first) { return text }
        }
        return String(response.text.prefix(200))
    }

}

/// OAuth2 access tokens from a token endpoint: the client-credentials grant, or the refresh-token grant when a
/// refresh token is given (Google's APIs). A token is kept until a minute before it expires; one cache per (token
/// URL, client, refresh token), shared by every run of the process.
final class OAuth2Client: Sendable {
    let tokenURL: String
    let clientID: String
    let clientSecret: String
    let scope: String?
    let refreshToken: String?
    private let cache: TokenCache

    actor TokenCache {
        var token: String?
        var expires: ContinuousClock.Instant = .now
        func valid() -> String? { token != nil && ContinuousClock.now < expires ? token : nil }
        func store(_ token: String, for lifetime: Duration) {
            self.token = token
            expires = ContinuousClock.now + max(.seconds(1), lifetime - .seconds(60))
        }
        func forget() { token = nil }
    }

    private static let shared = Mutex<[String: TokenCache]>([:])

    init(tokenURL: String, clientID: String, clientSecret: String, scope: String?, refreshToken: String? = nil) {
        self.tokenURL = tokenURL
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.scope = scope
        self.refreshToken = refreshToken
        let key = sha256Hex(
            Data("\(tokenURL)\u{1}\(clientID)\u{1}\(clientSecret)\u{1}\(refreshToken ?? "")".utf8), bytes: 16)
        cache = Self.shared.withLock { caches in
            if let existing = caches[key] { return existing }
            let created = TokenCache()
            caches[key] = created
            return created
        }
    }

    func forget() async { await cache.forget() }

    /// A valid access token, fetched when there is none.
    func token(sender: HTTPSender) async throws -> String {
        if let token = await cache.valid() { return token }
        var form =
            refreshToken.map { [("grant_type", "refresh_token"), ("refresh_token", $0)] } ?? [
                ("grant_type", "client_credentials")
            ]
        form += [("client_id", clientID), ("client_secret", clientSecret)]
        if let scope { form.append(("scope", scope)) }
        let response = try await sender.send(
            "POST", tokenURL, headers: [("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")],
            body: HTTPSender.formEncoded(form))
        guard (200..<300).contains(response.status), let answer = try? JSONParser.parse(response.body),
            case .string(let token)? = answer["access_token"]
        else {
            throw DestinationError(
                "OAuth2 token from \(HTTPSender.redacted(tokenURL)): HTTP \(response.status) \(HTTPDestination.message(response))",
                retryable: false)
        }
        var lifetime = Duration.seconds(3600)
        if case .number(let text)? = answer["expires_in"], let seconds = Double(text) {
            lifetime = .milliseconds(Int64(seconds * 1000))
        }
        await cache.store(token, for: lifetime)
        return token
    }
}
