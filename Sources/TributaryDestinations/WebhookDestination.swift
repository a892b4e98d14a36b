import Crypto
import Foundation
import TributaryModel
import TributarySyncs

/// POSTs each batch as JSON to a URL.
///
/// Settings: `url` (required), `secret` (for the signature; `env:NAME` reads it from the environment), `headers` (an
/// object of extra headers, values may be `env:NAME`), `timeoutSeconds` (default 30), `maxBatchSize` (default 1000).
///
/// The body: `{"sync": "vip", "run_id": 12, "batch_id": "…", "changes": [{"op": "upsert", "key": {…}, "fields": {…},
/// "idempotency_key": "…"}]}`. Headers: `Content-Type: application/json`, `Idempotency-Key` (the batch id: the same
/// for the same changes), `X-Tributary-Timestamp` (Unix seconds) and, with a secret,
/// `X-Tributary-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
///
/// Any 2xx confirms the batch, except the changes the receiver lists in its answer as `{"rejected":
/// [{"idempotency_key": "…", "reason": "…"}]}`. 429, 5xx, timeouts and connection failures are retried; any other
/// status fails the batch.
public struct WebhookDestination: Destination {
    /// One receiving URL (hashed: a URL may carry a token).
    public var account: String? { "webhook:" + sha256Hex(Data(url.utf8), bytes: 8) }
    let sender: HTTPSender
    let url: String
    let secret: String?
    let headers: [(String, String)]
    let context: DestinationContext
    public let maxBatchSize: Int

    public static let keys = ["type", "url", "secret", "headers", "timeoutSeconds", "maxBatchSize"]

    public static func validate(_ settings: JSONValue) throws {
        guard case .string(let url)? = settings["url"],
            url.hasPrefix("http://") || url.hasPrefix("https://") || url.hasPrefix("env:")
        else {
            throw SyncError("destination.url: required, an http:// or https:// URL")
        }
        if let headers = settings["headers"], headers != .null {
            guard case .object(let members) = headers, members.allSatisfy({ if case .string = $0.1 { true } else { false } })
            else {
                throw SyncError("destination.headers: an object of header names to string values")
            }
        }
        if let unknown = settings.objectKeys.first(where: { !keys.contains($0) }) {
            throw SyncError("destination.\(unknown): unknown setting for a webhook (\(keys.dropFirst().joined(separator: ", ")))")
        }
    }

    public init(_ context: DestinationContext, sender: HTTPSender = HTTPSender()) throws {
        try Self.validate(context.settings)
        self.context = context
        url = try context.string("url")!
        secret = try context.string("secret", required: false)
        var headers: [(String, String)] = []
        for (name, _) in context.settings["headers"]?.objectMembers ?? [] {
            var nested = context
            nested.settings = context.settings["headers"]!
            headers.append((name, try nested.string(name)!))
        }
        self.headers = headers
        var sender = sender
        if case .number(let text)? = context.settings["timeoutSeconds"], let seconds = Double(text), seconds > 0 {
            sender.timeout = .milliseconds(Int64(seconds * 1000))
        }
        self.sender = sender
        if case .number(let text)? = context.settings["maxBatchSize"], let size = Int(text), size > 0 {
            maxBatchSize = size
        } else {
            maxBatchSize = 1000
        }
    }

    /// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
    public static func signature(secret: String, timestamp: String, body: [UInt8]) -> String {
        let mac = HMAC<SHA256>.authenticationCode(
            for: Array(timestamp.utf8) + [UInt8(ascii: ".")] + body, using: SymmetricKey(data: Array(secret.utf8)))
        return "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    public func send(_ batch: [SyncChange]) async throws -> [ChangeResult] {
        let batchID = SHA256.hash(data: Array(batch.map(\.idempotencyKey).joined(separator: ",").utf8))
            .prefix(16).map { String(format: "%02x", $0) }.joined()
        let body = JSONValue.object([
            ("sync", .string(context.sync)), ("run_id", .number(String(context.runID))), ("batch_id", .string(batchID)),
            (
                "changes",
                .array(
                    batch.map { change in
                        .object([
                            ("op", .string(change.operation.rawValue)), ("key", change.key), ("fields", change.fields),
                            ("idempotency_key", .string(change.idempotencyKey)),
                        ])
                    })
            ),
        ])
        var bytes: [UInt8] = []
        body.write(to: &bytes)
        let timestamp = String(Int(Date().timeIntervalSince1970))
        var headers = [
            ("Content-Type", "application/json"), ("Idempotency-Key", batchID), ("X-Tributary-Timestamp", timestamp),
            ("User-Agent", "tributary/\(Tributary.version)"),
        ]
        if let secret {
            headers.append(("X-Tributary-Signature", Self.signature(secret: secret, timestamp: timestamp, body: bytes)))
        }
        let response = try await sender.send("POST", url, headers: headers + self.headers, body: bytes)
        guard (200..<300).contains(response.status) else {
            throw DestinationError(
                "POST \(HTTPSender.redacted(url)): HTTP \(response.status) \(response.text.prefix(200))", retryable: false)
        }
        // Row-level rejections, if the receiver lists any.
        var rejected: [String: String] = [:]
        if !response.body.isEmpty, let answer = try? JSONParser.parse(response.body), case .array(let items)? = answer["rejected"]
        {
            for item in items {
                if case .string(let key)? = item["idempotency_key"] {
                    rejected[key] = if case .string(let reason)? = item["reason"] { reason } else { "rejected by the receiver" }
                }
            }
        }
        return batch.map { change in rejected[change.idempotencyKey].map { .rejected($0) } ?? .delivered }
    }
}
