import CLibPQ
import Foundation
import Logging

/// One connection to PostgreSQL, over libpq.
///
/// The connection is an actor whose executor is a thread of its own, so libpq's blocking calls never hold one of
/// Swift's cooperative threads. Calls run one at a time, in order.
///
/// ```swift
/// let connection = try await PostgresConnection.connect(configuration: config, logger: logger)
/// let rows = try await connection.query("SELECT id, email FROM users WHERE id = \(42)")
/// let email = try rows.first?["email"].decode(String?.self)
/// ```
///
/// Most code should lease connections from a ``PostgresClient`` instead of opening them directly.
public actor PostgresConnection {
    let thread: ConnectionThread
    /// Where the actor's jobs run: the connection's own thread.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { thread.asUnownedSerialExecutor() }

    var handle: OpaquePointer?
    let logger: Logger
    /// Notifications read off the socket but not yet handed to a caller.
    var pendingNotifications: [PostgresNotification] = []
    /// True while a COPY or a streaming query is in progress; no other statement may run then.
    var exclusiveOperationInProgress = false
    /// The number used for the next automatic savepoint name.
    var savepointCounter = 0
    /// Lets cancellation handlers, which run on other threads, interrupt the statement in flight.
    let cancelSignal = CancelSignal()
    /// Receives the server's notices (they go to the debug log, not to standard error).
    private let noticeSink: NoticeSink
    /// A number that identifies this connection in logs.
    public nonisolated let id: Int

    private static let counter = IDCounter()

    private init(logger: Logger) {
        id = Self.counter.next()
        thread = ConnectionThread(name: "postgres-\(id)")
        var logger = logger
        logger[metadataKey: "pg.connection"] = "\(id)"
        self.logger = logger
        noticeSink = NoticeSink(logger: logger)
    }

    isolated deinit {
        if let handle { PQfinish(handle) }
        thread.shutdown()
    }

    /// Opens a connection.
    ///
    /// - Throws: ``PostgresError`` of kind ``PostgresError/Kind/connection`` with one line naming the server and
    ///   what went wrong (refused, unknown host, wrong password, missing database), and a hint.
    public static func connect(configuration: PostgresConfiguration, logger: Logger) async throws -> PostgresConnection {
        let connection = PostgresConnection(logger: logger)
        try await connection.open(configuration)
        return connection
    }

    /// Opens a connection, runs `body` on it and closes it, whether `body` returns or throws.
    ///
    /// ```swift
    /// let n = try await PostgresConnection.withConnection(configuration: c, logger: logger) { try await $0.query("SELECT 1").scalar(Int.self) }
    /// ```
    public static func withConnection<T>(
        configuration: PostgresConfiguration, logger: Logger, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let connection = try await connect(configuration: configuration, logger: logger)
        do {
            let value = try await body(connection)
            await connection.close()
            return value
        } catch {
            await connection.close()
            throw error
        }
    }

    private func open(_ configuration: PostgresConfiguration) throws {
        let parameters = configuration.connectParameters()
        let connection = withCStrings(parameters.map(\.0)) { keywords in
            withCStrings(parameters.map(\.1)) { values in
                PQconnectdbParams(keywords, values, 1)
            }
        }
        guard let connection else {
            throw PostgresError(.connection, "cannot connect to PostgreSQL: libpq could not allocate a connection")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let raw = PostgresError.connectionMessage(connection, fallback: "unknown error")
            PQfinish(connection)
            throw Self.connectionFailure(raw, configuration: configuration)
        }
        handle = connection
        PQsetNoticeReceiver(
            connection,
            { context, result in
                guard let context, let result, let message = PQresultErrorField(result, Int32(UInt8(ascii: "M"))) else { return }
                let sink = Unmanaged<NoticeSink>.fromOpaque(context).takeUnretainedValue()
                sink.logger.debug("server notice", metadata: ["notice": "\(String(cString: message))"])
            }, Unmanaged.passUnretained(noticeSink).toOpaque())
        let version = PQserverVersion(connection)
        if version < 140_000 {
            close()
            throw PostgresError(
                .connection, "the server runs PostgreSQL \(version / 10000); Tributary needs PostgreSQL 14 or later")
        }
        // Fixed session settings make timestamps and bytea decode the same way on every server.
        cancelSignal.attach(PQgetCancel(connection))
        // Then the configuration's session settings (JIT off for Tributary's own statements, timeouts by role), in the
        // same round trip: set once here rather than with SET LOCAL before each statement.
        var settings = ["SET TimeZone TO 'UTC'", "SET DateStyle TO 'ISO, MDY'", "SET bytea_output TO 'hex'"]
        do {
            settings += try configuration.sessionSettings.map { try $0.sql() }
        } catch {
            close()
            throw error
        }
        try runScript(settings.joined(separator: "; "))
        logger.debug("connected", metadata: ["pg.server": "\(configuration)", "pg.pid": "\(PQbackendPID(connection))"])
    }

    /// Turns libpq's multi-line connection failure into one line with a hint.
    static func connectionFailure(_ raw: String, configuration: PostgresConfiguration) -> PostgresError {
        let message = raw.replacingNewlines()
        let lower = message.lowercased()
        let hint: String
        var state: SQLState?
        if lower.contains("password authentication failed") || lower.contains("no password supplied") {
            hint = "check the user and password in DATABASE_URL, PGUSER/PGPASSWORD or ~/.pgpass"
            state = .invalidPassword
        } else if lower.contains("does not exist") && lower.contains("database") {
            hint = "create the database (createdb NAME) or fix the database name in DATABASE_URL or PGDATABASE"
            state = .invalidCatalogName
        } else if lower.contains("could not translate host name") {
            hint = "check the host name in DATABASE_URL or PGHOST"
        } else if lower.contains("connection refused") || lower.contains("no such file or directory")
            || lower.contains("timeout expired")
        {
            hint =
                "is PostgreSQL running there? Check DATABASE_URL or PGHOST/PGPORT, "
                + "or unset them to use Tributary's embedded server"
        } else if lower.contains("ssl") {
            hint = "check sslmode and the server's SSL setup"
        } else {
            hint = "check DATABASE_URL or the PG* variables"
        }
        return PostgresError(
            .connection, "cannot connect to PostgreSQL (\(configuration)): \(message)", sqlState: state, hint: hint)
    }

    /// Closes the connection. Later calls fail with a connection error.
    public func close() {
        if let handle { PQfinish(handle) }
        handle = nil
    }

    /// The server's version number, for example 150018 for 15.18.
    public var serverVersion: Int { handle.map { Int(PQserverVersion($0)) } ?? 0 }

    /// The process id of the server backend serving this connection.
    public var backendPID: Int32 { handle.map { PQbackendPID($0) } ?? 0 }

    /// True once the connection was closed or lost.
    public var isClosed: Bool { handle.map { PQstatus($0) != CONNECTION_OK } ?? true }

    /// Whether the connection is idle, in a transaction, or in a failed transaction.
    public var transactionStatus: TransactionStatus {
        guard let handle else { return .unknown }
        switch PQtransactionStatus(handle) {
        case PQTRANS_IDLE: return .idle
        case PQTRANS_INTRANS: return .inTransaction
        case PQTRANS_INERROR: return .failedTransaction
        case PQTRANS_ACTIVE: return .active
        default: return .unknown
        }
    }

    public enum TransactionStatus: Sendable {
        case idle, inTransaction, failedTransaction, active, unknown
    }

    func liveHandle() throws -> OpaquePointer {
        guard let handle, PQstatus(handle) == CONNECTION_OK else {
            throw PostgresError(.connection, "the connection to the server is closed")
        }
        if exclusiveOperationInProgress {
            throw PostgresError(
                .misuse, "a COPY or a streaming query is in progress on this connection; finish it before another statement")
        }
        return handle
    }

    // MARK: - Statements

    /// Runs one statement with its parameters and returns its rows.
    ///
    /// Cancelling the calling task cancels the statement on the server and throws `CancellationError`.
    ///
    /// ```swift
    /// let n = try await connection.query("SELECT \(41) + 1 AS n").scalar(Int.self)  // SELECT $1 + 1 AS n → 42
    /// ```
    @discardableResult
    public nonisolated func query(_ query: PostgresQuery) async throws -> PostgresRows {
        let token = cancelSignal.nextToken()
        return try await withTaskCancellationHandler {
            try await self.run(query, token: token)
        } onCancel: {
            cancelSignal.cancel(token)
        }
    }

    /// Runs one statement and returns the number of rows it affected (nil for statements that affect none).
    @discardableResult
    public nonisolated func execute(_ query: PostgresQuery) async throws -> Int? {
        try await self.query(query).affectedRows
    }

    /// Runs a script of any number of statements separated by semicolons, with no parameters (the simple query
    /// protocol). Used for migrations and `sql/` files. Cancelling the calling task cancels it on the server.
    public nonisolated func script(_ sql: String) async throws {
        let token = cancelSignal.nextToken()
        try await withTaskCancellationHandler {
            try await self.runScript(sql, token: token)
        } onCancel: {
            cancelSignal.cancel(token)
        }
    }

    /// Runs one statement on the connection's thread. A non-zero `token` lets a cancellation handler interrupt it.
    @discardableResult
    func run(_ query: PostgresQuery, token: UInt64 = 0) throws -> PostgresRows {
        let query = try query.validated()
        let handle = try liveHandle()
        try cancelSignal.begin(token)
        defer { cancelSignal.end() }
        let result = Self.send(query, on: handle)
        defer { PQclear(result) }
        try cancelSignal.check(token, result: result)
        try check(result, handle: handle, for: query.sql)
        collectNotifications()
        return PostgresRows(result: result!)
    }

    func runScript(_ sql: String, token: UInt64 = 0) throws {
        if sql.utf8.contains(0) { throw PostgresError(.encoding, "the SQL script contains a NUL byte") }
        let handle = try liveHandle()
        try cancelSignal.begin(token)
        defer { cancelSignal.end() }
        guard PQsendQuery(handle, sql) == 1 else {
            throw PostgresError.fromResult(nil, connection: handle)
        }
        var firstError: PostgresError?
        while let result = PQgetResult(handle) {
            defer { PQclear(result) }
            let status = PQresultStatus(result)
            if status == PGRES_COPY_IN {
                PQputCopyEnd(handle, "COPY FROM STDIN is not supported in scripts")
            } else if status == PGRES_COPY_OUT {
                drainCopyOut(handle)
            } else if status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && status != PGRES_EMPTY_QUERY
                && firstError == nil
            {
                firstError = PostgresError.fromResult(result, connection: handle)
            }
        }
        collectNotifications()
        if let firstError {
            if firstError.sqlState == .queryCanceled, cancelSignal.wasRequested(token) { throw CancellationError() }
            throw firstError
        }
        if PQstatus(handle) != CONNECTION_OK {
            throw PostgresError(.connection, "lost the connection to the server while running a script")
        }
    }

    /// Sends a statement with the extended protocol (parameters never become SQL text).
    static func send(_ query: PostgresQuery, on handle: OpaquePointer) -> OpaquePointer? {
        query.withParameters { count, types, values, lengths, formats in
            PQexecParams(handle, query.sql, count, types, values, lengths, formats, 0)
        }
    }

    /// Throws the server's error unless the result is a success.
    func check(_ result: OpaquePointer?, handle: OpaquePointer, for sql: String) throws {
        let status = result.map(PQresultStatus) ?? PGRES_FATAL_ERROR
        switch status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return
        case PGRES_COPY_IN:
            PQputCopyEnd(handle, "use copyIn for COPY FROM STDIN")
            while let next = PQgetResult(handle) { PQclear(next) }
            throw PostgresError(.misuse, "COPY FROM STDIN must run through copyIn")
        case PGRES_COPY_OUT:
            drainCopyOut(handle)
            throw PostgresError(.misuse, "COPY TO STDOUT must run through copyOut")
        default:
            let error = PostgresError.fromResult(result, connection: handle)
            logger.debug("statement failed", metadata: ["error": "\(error)", "sql": "\(sql.prefix(200))"])
            throw error
        }
    }

    func drainCopyOut(_ handle: OpaquePointer) {
        var buffer: UnsafeMutablePointer<CChar>?
        while PQgetCopyData(handle, &buffer, 0) > 0 {
            PQfreemem(buffer)
            buffer = nil
        }
        while let next = PQgetResult(handle) { PQclear(next) }
    }

    // MARK: - Health

    /// Checks, without a round trip, that an idle connection is still usable: reads whatever the server sent
    /// while it was idle (a shutdown notice, an EOF) and reports whether the connection survived it.
    public func isUsable() -> Bool {
        guard let handle, PQstatus(handle) == CONNECTION_OK, !exclusiveOperationInProgress,
            PQtransactionStatus(handle) == PQTRANS_IDLE
        else { return false }
        if Self.socketReadable(PQsocket(handle), timeoutMilliseconds: 0) {
            if PQconsumeInput(handle) == 0 { return false }
            collectNotifications()
        }
        return PQstatus(handle) == CONNECTION_OK
    }

    static func socketReadable(_ socket: Int32, timeoutMilliseconds: Int32) -> Bool {
        guard socket >= 0 else { return false }
        var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&descriptor, 1, timeoutMilliseconds)
            if ready < 0 && errno == EINTR { continue }
            return ready > 0
        }
    }
}

/// Cancels a connection's statement from another thread, and only the statement it was asked to cancel.
///
/// Each cancellable call takes a token; `cancel(token)` sends libpq's cancel request only while that token's
/// statement runs, and a cancel that arrives before the statement starts stops it from starting.
final class CancelSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var handle: OpaquePointer?
    private var counter: UInt64 = 0
    private var running: UInt64 = 0
    private var requested: UInt64 = 0

    func attach(_ handle: OpaquePointer?) {
        lock.lock()
        defer { lock.unlock() }
        if let old = self.handle { PQfreeCancel(old) }
        self.handle = handle
    }

    func nextToken() -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        counter += 1
        return counter
    }

    /// Marks the token's statement as running; throws if it was cancelled before it started.
    func begin(_ token: UInt64) throws {
        guard token != 0 else { return }
        lock.lock()
        defer { lock.unlock() }
        if requested == token { throw CancellationError() }
        running = token
    }

    func end() {
        lock.lock()
        running = 0
        lock.unlock()
    }

    func cancel(_ token: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        requested = token
        guard running == token else { return }
        sendLocked()
    }

    /// Asks the server to cancel whatever the connection is running now (a separate connection carries the request).
    func sendCancel() {
        lock.lock()
        defer { lock.unlock() }
        sendLocked()
    }

    private func sendLocked() {
        guard let handle else { return }
        var message = [CChar](repeating: 0, count: 256)
        _ = PQcancel(handle, &message, Int32(message.count))
    }

    func wasRequested(_ token: UInt64) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return token != 0 && requested == token
    }

    /// Turns the server's "canceling statement due to user request" into `CancellationError` when we asked for it.
    func check(_ token: UInt64, result: OpaquePointer?) throws {
        guard wasRequested(token), let result, PQresultStatus(result) == PGRES_FATAL_ERROR,
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))), String(cString: state) == "57014"
        else { return }
        throw CancellationError()
    }

    deinit {
        if let handle { PQfreeCancel(handle) }
    }
}

/// The context libpq's notice receiver gets; kept alive by the connection that installed it.
final class NoticeSink: Sendable {
    let logger: Logger
    init(logger: Logger) { self.logger = logger }
}

/// A thread-safe counter for connection ids.
final class IDCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}

/// Calls `body` with a C array of C strings that lives for the duration of the call, NULL-terminated.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let duplicated = strings.map { strdup($0) }
    defer { duplicated.forEach { free($0) } }
    var pointers: [UnsafePointer<CChar>?] = duplicated.map { UnsafePointer($0) }
    pointers.append(nil)
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

extension PostgresConnection {
    /// Whether the connection's isolated code runs on its own thread (for tests that check exactly that).
    func runsOnOwnThread() -> Bool {
        thread.isCurrent
    }
}
