import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// A local HTTP server for destination tests: every request is recorded, and `respond` decides each answer.
actor TestReceiver {
    struct Request: Sendable {
        var method: String
        var path: String
        var query: String
        var headers: [(String, String)]
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    struct Answer: Sendable {
        var status: Int = 200
        var headers: [(String, String)] = []
        var body: String = "{}"
        /// Wait this long before answering (to provoke client timeouts).
        var delay: Duration = .zero
    }

    private(set) var requests: [Request] = []
    private var respond: @Sendable (Request) -> Answer

    init(respond: @escaping @Sendable (Request) -> Answer = { _ in Answer() }) {
        self.respond = respond
    }

    func setResponder(_ respond: @escaping @Sendable (Request) -> Answer) { self.respond = respond }

    func record(_ request: Request) -> Answer {
        requests.append(request)
        return respond(request)
    }

    /// Starts the server on a free port, runs `body` with the base URL (`http://127.0.0.1:PORT`), then stops it.
    func serve<T: Sendable>(_ body: @Sendable (String) async throws -> T) async throws -> T {
        let router = Router()
        let receiver = self
        router.on("**", method: .post) { request, context in try await Self.handle(request, context, receiver) }
        router.on("**", method: .delete) { request, context in try await Self.handle(request, context, receiver) }
        router.on("**", method: .put) { request, context in try await Self.handle(request, context, receiver) }
        router.on("**", method: .get) { request, context in try await Self.handle(request, context, receiver) }
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "test-receiver")
        logger.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) }, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            var ports = stream.makeAsyncIterator()
            guard let port = await ports.next() else { throw CancellationError() }
            defer { group.cancelAll() }
            return try await body("http://127.0.0.1:\(port)")
        }
    }

    private static func handle(
        _ request: Hummingbird.Request, _ context: BasicRequestContext, _ receiver: TestReceiver
    ) async throws -> Response {
        var body = try await request.body.collect(upTo: 64 << 20)
        let recorded = Request(
            method: request.method.rawValue, path: request.uri.path, query: request.uri.query ?? "",
            headers: request.headers.map { ($0.name.rawName, $0.value) }, body: body.readBytes(length: body.readableBytes) ?? [])
        let answer = await receiver.record(recorded)
        if answer.delay > .zero { try await Task.sleep(for: answer.delay) }
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        for (name, value) in answer.headers { if let field = HTTPField.Name(name) { headers[field] = value } }
        return Response(
            status: HTTPResponse.Status(code: answer.status), headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(string: answer.body)))
    }
}
