import Foundation
import LocalReceiver
import TributaryDestinations
import TributaryModel

/// The demo's webhook receiver: checks each request's signature and counts the changes it received.
actor DemoReceiver {
    let secret: String
    private(set) var requests = 0
    private(set) var changes = 0
    private(set) var badSignatures = 0
    private(set) var sample: String?

    /// When the first add or upsert carrying each `fields.email` arrived.
    private(set) var arrivals: [String: ContinuousClock.Instant] = [:]

    init(secret: String) { self.secret = secret }

    /// Waits until a change for `email` has arrived (at most `timeout`); returns when it arrived.
    func arrival(of email: String, timeout: Duration) async -> ContinuousClock.Instant? {
        let deadline = ContinuousClock.now + timeout
        while arrivals[email] == nil, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(2)) }
        return arrivals[email]
    }

    func receive(_ body: [UInt8], timestamp: String?, signature: String?) {
        requests += 1
        guard let timestamp, signature == WebhookDestination.signature(secret: secret, timestamp: timestamp, body: body) else {
            badSignatures += 1
            return
        }
        if case .array(let list)? = (try? JSONParser.parse(body))?["changes"] {
            changes += list.count
            let now = ContinuousClock.now
            for change in list {
                if case .string(let email)? = change["fields"]?["email"], arrivals[email] == nil,
                    change["op"] == .string("add") || change["op"] == .string("upsert")
                {
                    arrivals[email] = now
                }
            }
            if sample == nil, let first = list.first { sample = first.serialized }
        }
    }

    /// Runs the receiver on a free local port (``LocalReceiver``) while `body` runs with its URL (path `/hook`).
    func serve<T: Sendable>(_ body: @Sendable (String) async throws -> T) async throws -> T {
        try await LocalReceiver.serve(
            maxBody: 16 << 20,
            handler: { request in
                if request.method == "POST" && request.path == "/hook" {
                    await self.receive(
                        request.body, timestamp: request.header("X-Tributary-Timestamp"),
                        signature: request.header("X-Tributary-Signature"))
                }
                return LocalReceiver.Answer()
            }, { try await body($0 + "/hook") })
    }
}
