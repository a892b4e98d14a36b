import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// A local HTTP server standing in for a destination or a webhook consumer: the demo's webhook receiver, the
/// destination tests' recorder and the benchmarks' probes all run on it. It listens on 127.0.0.1 on a free port, hands
/// every request (any path; GET, POST, PUT, DELETE) to a handler that decides the answer, and stops when the body
/// that uses it returns or throws.
public enum LocalReceiver {
    /// A request as received.
    public struct Request: Sendable {
        public var method: String
        public var path: String
        public var query: String
        public var headers: [(String, String)]
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
        /// The first value of the header `name` (any case).
        public func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    /// The answer to a request.
    public struct Answer: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: String
        /// Wait this long before answering (to provoke client timeouts).
        public var delay: Duration

        public init(status: Int = 200, headers: [(String, String)] = [], body: String = "{}", delay: Duration = .zero) {
            self.status = status
            self.headers = headers
            self.body = body
            self.delay = delay
        }
    }

    /// Runs the server while `body` runs with its base URL (`http://127.0.0.1:PORT`); bodies up to `maxBody` bytes.
    public static func serve<T>(
        maxBody: Int = 256 << 20, handler: @escaping @Sendable (Request) async -> Answer,
        _ body: (String) async throws -> T
    ) async throws -> T {
        let router = Router()
        for method in [HTTPRequest.Method.post, .put, .patch, .delete, .get] {
            router.on("**", method: method) { request, _ in try await answer(request, maxBody: maxBody, handler) }
        }
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "local-receiver")
        logger.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) }, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            defer { group.cancelAll() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw CancellationError() }
            return try await body("http://127.0.0.1:\(port)")
        }
    }

    private static func answer(
        _ request: Hummingbird.Request, maxBody: Int, _ handler: @Sendable (Request) async -> Answer
    ) async throws -> Response {
        let buffer = try await request.body.collect(upTo: maxBody)
        let received = Request(
            method: request.method.rawValue, path: request.uri.path, query: request.uri.query ?? "",
            headers: request.headers.map { ($0.name.rawName, $0.value) }, body: Array(buffer.readableBytesView))
        let answer = await handler(received)
        if answer.delay > .zero { try await Task.sleep(for: answer.delay) }
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        for (name, value) in answer.headers { if let field = HTTPField.Name(name) { headers[field] = value } }
        return Response(
            status: HTTPResponse.Status(code: answer.status), headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(string: answer.body)))
    }
}
