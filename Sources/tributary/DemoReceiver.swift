import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
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

    /// Runs the receiver on a free local port while `body` runs with its URL.
    func serve<T: Sendable>(logger: Logger, _ body: @Sendable (String) async throws -> T) async throws -> T {
        let router = Router()
        let receiver = self
        router.post("hook") { request, _ -> Response in
            var buffer = try await request.body.collect(upTo: 16 << 20)
            await receiver.receive(
                buffer.readBytes(length: buffer.readableBytes) ?? [],
                timestamp: request.headers[values: .init("X-Tributary-Timestamp")!].first,
                signature: request.headers[values: .init("X-Tributary-Signature")!].first)
            return Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(string: "{}")))
        }
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        var quiet = logger
        quiet.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) }, logger: quiet)
        let services = ServiceGroup(services: [app], gracefulShutdownSignals: [], logger: quiet)
        let server = Task { try await services.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CLIError("the demo webhook receiver did not start") }
        do {
            let result = try await body("http://127.0.0.1:\(port)/hook")
            await services.triggerGracefulShutdown()
            _ = try? await server.value
            return result
        } catch {
            await services.triggerGracefulShutdown()
            throw error
        }
    }
}
