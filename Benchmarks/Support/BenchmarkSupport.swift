// What the benchmark executables share: progress output, timing, ingesting events, fresh databases.
import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Postgres
import TributaryCollection
import TributaryModel
import TributaryService

/// Prints a line straight to standard output (unbuffered, so a log file shows progress as it happens).
public func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// Seconds since `start`.
public func elapsed(since start: ContinuousClock.Instant) -> Double {
    let duration = ContinuousClock.now - start
    return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// Seconds since `start`, with one decimal.
public func seconds(since start: ContinuousClock.Instant) -> String { String(format: "%.1f", elapsed(since: start)) }

/// `value` with two decimals (Swift strings and `%@` do not mix on Linux, so tables build their cells with this).
public func fixed(_ value: Double) -> String { String(format: "%.2f", value) }

/// Stores `events` with the event writer, `writeSize` per write, four writes at a time.
public func ingest(_ events: [IncomingEvent], into client: PostgresClient, writeSize: Int, logger: Logger) async throws {
    let writer = EventWriter(client: client, maxQueuedEvents: 200_000, logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        var next = 0
        for _ in 0..<4 {
            let start = next
            next += writeSize
            guard start < events.count else { break }
            group.addTask {
                _ = try await writer.write(Array(events[start..<min(events.count, start + writeSize)]), sourceID: "bench")
            }
        }
        while try await group.next() != nil {
            let start = next
            next += writeSize
            guard start < events.count else { continue }
            group.addTask {
                _ = try await writer.write(Array(events[start..<min(events.count, start + writeSize)]), sourceID: "bench")
            }
        }
    }
}

/// Drops and recreates the database `name` on `server` (a copy of `template` if given), migrated; returns its
/// configuration.
public func freshDatabase(
    _ name: String, on server: PostgresConfiguration, files: ProjectFiles, logger: Logger, template: String? = nil
) async throws -> PostgresConfiguration {
    let admin = try await PostgresConnection.connect(configuration: server.with(database: "postgres"), logger: logger)
    try await admin.execute("DROP DATABASE IF EXISTS \(identifier: name) WITH (FORCE)")
    if let template {
        try await admin.execute("CREATE DATABASE \(identifier: name) TEMPLATE \(identifier: template)")
    } else {
        try await admin.execute("CREATE DATABASE \(identifier: name)")
    }
    await admin.close()
    let configuration = server.with(database: name)
    let client = PostgresClient(configuration: configuration, logger: logger)
    try await Migrator(files: files, logger: logger).migrate(client)
    await client.shutdown()
    return configuration
}

/// What a benchmark starts with: a quiet logger (warnings and worse), the bench server (DATABASE_URL/PG*, or the
/// embedded one in `dataDirectory`) and the project's migrations and SQL.
public func benchmarkEnvironment(
    dataDirectory: String
) async throws -> (logger: Logger, server: PostgresConfiguration, files: ProjectFiles) {
    var logger = Logger(label: "bench")
    logger.logLevel = .warning
    let server = try await DatabaseTarget.resolve(dataDirectory: dataDirectory, logger: logger).configuration
    return (logger, server, try ProjectFiles.locate())
}

/// The port an in-process server listens on, once it does (set from its `onListening`).
public actor PortBox {
    private var port: Int?
    private var waiters: [CheckedContinuation<Int, Never>] = []

    public init() {}

    public func set(_ port: Int) {
        self.port = port
        for waiter in waiters { waiter.resume(returning: port) }
        waiters = []
    }

    public func wait() async throws -> Int {
        if let port { return port }
        return await withCheckedContinuation { waiters.append($0) }
    }
}

/// Signs in to the console at `base` with the API token `secret` through its form (nonce cookie included); returns
/// the session cookie (`tributary_session=…`). `http` must not follow redirects.
public func consoleSignIn(_ http: HTTPClient, base: String, secret: String) async throws -> String {
    let form = try await http.execute(HTTPClientRequest(url: base + "/console/login"), timeout: .seconds(30))
    guard let nonceCookie = form.headers.first(name: "set-cookie")?.split(separator: ";").first else {
        throw ValidationError("the console's sign-in form set no cookie: \(form.status)")
    }
    var request = HTTPClientRequest(url: base + "/console/login")
    request.method = .POST
    request.headers.add(name: "cookie", value: String(nonceCookie))
    request.headers.add(name: "content-type", value: "application/x-www-form-urlencoded")
    request.body = .bytes(ByteBuffer(string: "nonce=\(nonceCookie.split(separator: "=")[1])&token=\(secret)"))
    let response = try await http.execute(request, timeout: .seconds(30))
    guard response.status == .seeOther, let cookie = response.headers.first(name: "set-cookie")?.split(separator: ";").first
    else {
        throw ValidationError("console sign-in failed: \(response.status)")
    }
    return String(cookie)
}
