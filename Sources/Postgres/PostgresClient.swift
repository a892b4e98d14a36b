import Foundation
import Logging

/// An async client over a bounded pool of connections.
///
/// The pool opens connections on demand up to `maxConnections`, reuses idle ones after checking (without a round
/// trip) that the server has not closed them, and replaces dead ones, so it recovers by itself when the server
/// restarts: the statements in flight at that moment fail, later ones succeed once the server is back.
///
/// ```swift
/// let client = PostgresClient(configuration: config, logger: logger)
/// let count = try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self)
/// try await client.withTransaction { tx in … }
/// await client.shutdown()
/// ```
public final class PostgresClient: Sendable {
    public struct Options: Sendable {
        /// The most connections open at once.
        public var maxConnections: Int = 10
        /// How long a lease waits for a free connection before failing with ``PostgresError/Kind/poolTimeout``.
        public var leaseTimeout: Duration = .seconds(30)
        public init(maxConnections: Int = 10, leaseTimeout: Duration = .seconds(30)) {
            self.maxConnections = maxConnections
            self.leaseTimeout = leaseTimeout
        }
    }

    public let configuration: PostgresConfiguration
    private let pool: ConnectionPool

    public init(configuration: PostgresConfiguration, options: Options = Options(), logger: Logger) {
        self.configuration = configuration
        pool = ConnectionPool(configuration: configuration, options: options, logger: logger)
    }

    /// Leases a connection for the duration of `body`.
    ///
    /// A connection returned in a transaction, in a COPY, or broken is closed rather than reused.
    @discardableResult
    public func withConnection<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await pool.lease()
        do {
            let value = try await body(connection)
            await pool.release(connection)
            return value
        } catch {
            await pool.release(connection)
            throw error
        }
    }

    /// Runs `body` in a transaction on a leased connection (see ``PostgresConnection/withTransaction(isolation:_:)``).
    @discardableResult
    public func withTransaction<T>(
        isolation: IsolationLevel? = nil, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await withConnection { try await $0.withTransaction(isolation: isolation, body) }
    }

    /// Runs one statement on a leased connection.
    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> PostgresRows {
        try await withConnection { try await $0.query(query) }
    }

    /// Runs one statement and returns the number of rows it affected.
    @discardableResult
    public func execute(_ query: PostgresQuery) async throws -> Int? {
        try await withConnection { try await $0.execute(query) }
    }

    /// Counts of the pool's connections, for metrics and tests.
    public func statistics() async -> (open: Int, idle: Int, waiting: Int) {
        await pool.statistics()
    }

    /// Closes idle connections and fails waiting and later leases. Leased connections close when returned.
    public func shutdown() async {
        await pool.shutdown()
    }
}

/// The pool: the state machine plus the I/O it asks for.
actor ConnectionPool {
    private var state: PoolStateMachine<PostgresConnection>
    private var waiting: [Int: CheckedContinuation<PoolStateMachine<PostgresConnection>.Grant, any Error>] = [:]
    private var nextWaiter = 0
    private let configuration: PostgresConfiguration
    private let options: PostgresClient.Options
    private let logger: Logger

    init(configuration: PostgresConfiguration, options: PostgresClient.Options, logger: Logger) {
        self.configuration = configuration
        self.options = options
        self.logger = logger
        state = PoolStateMachine(maxConnections: options.maxConnections)
    }

    func lease() async throws -> PostgresConnection {
        nextWaiter += 1
        let id = nextWaiter
        var grant: PoolStateMachine<PostgresConnection>.Grant
        switch state.requestLease(waiter: id) {
        case .grant(let granted):
            grant = granted
        case .closed:
            throw PostgresError(.poolClosed, "the database client has been shut down")
        case .wait:
            grant = try await waitForGrant(id)
        }
        while true {
            switch grant {
            case .use(let connection):
                if await connection.isUsable() { return connection }
                logger.info("replacing a connection the server closed", metadata: ["pg.connection": "\(connection.id)"])
                await connection.close()
                grant = .connect
            case .connect:
                do {
                    return try await PostgresConnection.connect(configuration: configuration, logger: logger)
                } catch {
                    serve(state.slotFreed())
                    throw error
                }
            }
        }
    }

    private func waitForGrant(_ id: Int) async throws -> PoolStateMachine<PostgresConnection>.Grant {
        let timeout = options.leaseTimeout
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            await self?.abandon(
                id,
                with: PostgresError(
                    .poolTimeout,
                    "no database connection became free within \(timeout) (all \(self?.options.maxConnections ?? 0) are in use)",
                    hint: "raise the pool size or shorten the work done while holding a connection"))
        }
        defer { timer.cancel() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                waiting[id] = continuation
            }
        } onCancel: {
            Task { await self.abandon(id, with: CancellationError()) }
        }
    }

    private func abandon(_ id: Int, with error: any Error) {
        guard state.removeWaiter(id), let continuation = waiting.removeValue(forKey: id) else { return }
        continuation.resume(throwing: error)
    }

    private func serve(_ next: (waiter: Int, grant: PoolStateMachine<PostgresConnection>.Grant)?) {
        guard let (id, grant) = next else { return }
        waiting.removeValue(forKey: id)?.resume(returning: grant)
    }

    func release(_ connection: PostgresConnection) async {
        let reusable = await connection.isUsable() && !state.isClosed
        if !reusable { await connection.close() }
        serve(state.release(connection, reusable: reusable))
    }

    func statistics() -> (open: Int, idle: Int, waiting: Int) {
        (state.open, state.idle.count, state.waiters.count)
    }

    func shutdown() async {
        let (idle, waiters) = state.close()
        for id in waiters {
            waiting.removeValue(forKey: id)?.resume(
                throwing: PostgresError(.poolClosed, "the database client has been shut down"))
        }
        for connection in idle { await connection.close() }
    }
}
