import Foundation
import LocalReceiver

/// A local HTTP server for destination tests (``LocalReceiver``): every request is recorded, and `respond` decides
/// each answer.
actor TestReceiver {
    typealias Request = LocalReceiver.Request
    typealias Answer = LocalReceiver.Answer

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
        try await LocalReceiver.serve(maxBody: 64 << 20, handler: { await self.record($0) }, body)
    }
}
