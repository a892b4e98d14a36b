// tributary-profile-api-bench: latency of GET /v1/profiles/{kind}/{value} under concurrent clients.
//
//   swift build -c release --product tributary-profile-api-bench
//   .build/release/tributary-profile-api-bench --database-url postgres://… [--clients 50] [--seconds 20] [--events 20]
//
// Against an existing database with identities (the embedded default when --database-url, DATABASE_URL and PG* are
// all unset): migrates it (so the profile API's SQL is current), picks --identifiers random active identifiers,
// creates a temporary API token (deleted at the end), starts the HTTP application in this process on an ephemeral
// port, and drives it with --clients concurrent AsyncHTTPClient loops for --seconds. Prints requests/s, latency
// p50/p90/p99/max in ms, and errors by kind. Client, server and PostgreSQL share the machine's cores.
import ArgumentParser
import AsyncHTTPClient
import BenchmarkSupport
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Postgres
import TributaryModel
import TributaryProfiles
import TributaryServer
import TributaryService

@main
struct ProfileAPIBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tributary-profile-api-bench")

    @Option(help: "The database to read (default: DATABASE_URL / PG*, else the embedded server).") var databaseURL: String?
    @Option(
        help:
            "Embedded data directory used when no database is named (default: the CLI's, $TRIBUTARY_PGDATA or .tributary/pgdata)."
    )
    var dataDir: String?
    @Option(help: "Concurrent HTTP clients, each sending its next request when the last is answered.") var clients = 50
    @Option(help: "How long to send requests.") var seconds = 20
    @Option(
        help:
            "Requests per second from all clients together (0: each client sends its next request as soon as the last is answered)."
    )
    var rate = 0.0
    @Option(help: "Random active identifiers to look up.") var identifiers = 1000
    @Option(help: "Events per document (the events query parameter).") var events = ProfileDocuments.defaultEvents
    @Option(help: "The server's database connections (tributary serve uses 8).") var connections = 8

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let database: PostgresConfiguration
        if let databaseURL {
            database = try PostgresConfiguration(connectionString: databaseURL)
        } else {
            database = try await DatabaseTarget.resolve(dataDirectory: dataDir, logger: logger).configuration
        }
        let client = PostgresClient(configuration: database, options: .init(maxConnections: connections), logger: logger)
        try await Migrator(files: try ProjectFiles.locate(), logger: logger).migrate(client)
        let version = try await client.query("SHOW server_version").scalar(String.self)
        let profiles = try await client.query("SELECT count(*) FROM cdp.identity_profiles").scalar(Int.self)
        let picked = try await client.query(
            """
            SELECT kind, value FROM cdp.identity_nodes WHERE status = 'active' ORDER BY random() LIMIT \(identifiers)
            """
        ).map { try $0.decode((String, String).self) }
        guard !picked.isEmpty else {
            throw CleanExit.message("the database has no identifiers; ingest events and run the identity stage first")
        }
        let paths = picked.map { "/v1/profiles/\(percentEncoded($0.0))/\(percentEncoded($0.1))?events=\(events)" }
        print(
            "server: PostgreSQL \(version); \(ProcessInfo.processInfo.activeProcessorCount) cores; \(profiles) profiles; "
                + "\(paths.count) random identifiers; \(clients) clients for \(seconds) s; \(events) events per document; "
                + "\(connections) database connections")

        let tokens = APITokenStore(client: client)
        let (token, secret) = try await tokens.create(
            name: "profile-api-bench-\(UUID().uuidString.prefix(8))", scopes: [.profilesRead])
        let port = PortBox()
        // Quiet: stopping the server at the end logs cancellations; failed requests are counted by status instead.
        var serverLogger = logger
        serverLogger.logLevel = .critical
        let app = buildApplication(
            configuration: ServerConfiguration(port: 0), client: client, logger: serverLogger, onListening: { await port.set($0) }
        )
        let server = Task { try await app.run() }
        let listening = try await port.wait()

        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = clients
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
        let base = "http://127.0.0.1:\(listening)"
        // Warm up: connections, plans, caches.
        _ = try await Self.drive(http: http, base: base, paths: paths, secret: secret, clients: clients, duration: .seconds(2))
        let result = try await Self.drive(
            http: http, base: base, paths: paths, secret: secret, clients: clients, duration: .seconds(seconds), rate: rate)

        try await http.shutdown()
        server.cancel()
        _ = try? await server.value
        try await client.execute("DELETE FROM cdp.api_tokens WHERE token_id = \(token.id)")
        await client.shutdown()

        let sorted = result.latencies.sorted()
        func percentile(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
        }
        print(
            String(
                format: "requests: %d in %.1f s = %.0f requests/s (%d clients, %@)", sorted.count, result.seconds,
                Double(sorted.count) / result.seconds, clients, rate > 0 ? String(format: "paced at %.0f/s", rate) : "closed loop"
            ))
        print(
            String(
                format: "latency (ms): p50 %.2f   p90 %.2f   p99 %.2f   max %.2f", percentile(0.5), percentile(0.9),
                percentile(0.99), sorted.last ?? 0))
        print("status: " + result.statuses.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", "))
        let failures = result.statuses.filter { $0.key != 200 }.values.reduce(0, +) + result.errors.values.reduce(0, +)
        print(
            "errors: \(failures)"
                + (result.errors.isEmpty
                    ? "" : " (" + result.errors.map { "\($0.key) × \($0.value)" }.joined(separator: "; ") + ")"))
    }

    struct Result {
        var latencies: [Double] = []
        var statuses: [UInt: Int] = [:]
        var errors: [String: Int] = [:]
        var seconds = 0.0
    }

    /// `clients` loops, each requesting a random path and waiting for the whole answer, until `duration` is over.
    /// With `rate` > 0 the clients together send `rate` requests per second, each on its own schedule (a request
    /// that comes due while the last is still out is sent as soon as it is answered).
    static func drive(
        http: HTTPClient, base: String, paths: [String], secret: String, clients: Int, duration: Duration, rate: Double = 0
    ) async throws -> Result {
        let start = ContinuousClock.now
        let deadline = start + duration
        let interval: Duration = rate > 0 ? .nanoseconds(Int64(Double(clients) / rate * 1e9)) : .zero
        let results = try await withThrowingTaskGroup(of: Result.self) { group in
            for client in 0..<clients {
                group.addTask {
                    var result = Result()
                    var generator = SystemRandomNumberGenerator()
                    var due = start + interval * client / clients
                    while ContinuousClock.now < deadline {
                        if rate > 0 {
                            if due > ContinuousClock.now { try await Task.sleep(until: due) }
                            due += interval
                        }
                        var request = HTTPClientRequest(url: base + paths[Int(generator.next(upperBound: UInt64(paths.count)))])
                        request.headers.add(name: "Authorization", value: "Bearer \(secret)")
                        let sent = ContinuousClock.now
                        do {
                            let response = try await http.execute(request, timeout: .seconds(30))
                            _ = try await response.body.collect(upTo: 16 << 20)
                            result.statuses[response.status.code, default: 0] += 1
                        } catch {
                            result.errors["\(error)", default: 0] += 1
                            continue
                        }
                        let took = ContinuousClock.now - sent
                        result.latencies.append(
                            Double(took.components.seconds) * 1000 + Double(took.components.attoseconds) / 1e15)
                    }
                    return result
                }
            }
            var all: [Result] = []
            for try await result in group { all.append(result) }
            return all
        }
        var merged = Result()
        for result in results {
            merged.latencies += result.latencies
            merged.statuses.merge(result.statuses, uniquingKeysWith: +)
            merged.errors.merge(result.errors, uniquingKeysWith: +)
        }
        let elapsed = ContinuousClock.now - start
        merged.seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return merged
    }
}
