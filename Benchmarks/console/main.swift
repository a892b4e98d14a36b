// tributary-console-bench: server time of each console page on the 300,000-profile benchmark data.
//
//   swift build -c release --product tributary-console-bench && .build/release/tributary-console-bench
//
// Copies --template (default tributary_profiles_bench, which the profiles benchmark leaves: 300,000 profiles, 1.1M
// events) into a fresh tributary_console_bench on the bench server, migrates it, applies two segments and refreshes
// them, records a sync with --runs runs and their rows (a share rejected), then serves the console in this process and
// requests each page --repeat times one after another (after one warm-up request each). Prints per page the
// median, p90 and maximum in ms (the request on localhost: server time plus a loopback round trip).
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
import TributarySegments
import TributaryServer
import TributaryService

@main
struct ConsoleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tributary-console-bench")

    @OptionGroup var options: LoadOptions
    @Option(help: "The database to copy (the profiles benchmark's).") var template = "tributary_profiles_bench"
    @Option(help: "Requests per page.") var `repeat` = 20
    @Option(help: "Sync runs recorded for the sync page (1,000 rows each, 2% rejected).") var runs = 300

    func run() async throws {
        let (logger, server, files) = try await benchmarkEnvironment(dataDirectory: options.dataDir)
        let started = ContinuousClock.now
        let database = try await freshDatabase(
            "tributary_console_bench", on: server, files: files, logger: logger, template: template)
        let client = PostgresClient(configuration: database, options: .init(maxConnections: 8), logger: logger)
        let (profiles, events) = try await client.query(
            "SELECT (SELECT count(*) FROM cdp.identity_profiles), (SELECT count(*) FROM cdp.events)"
        ).first!.decode((Int, Int).self)
        say("data: \(profiles) profiles, \(events) events (copy of \(template), migrated)")

        // Two segments, refreshed: one on an event, one on a computed trait.
        let segments = SegmentStore(client: client, logger: logger)
        _ = try await segments.apply(
            SegmentDefinitions([
                Segment("viewers_30d") { Event("Product Viewed", within: .days(30)).count >= 1 },
                Segment("repeat_buyers") { Event("Order Completed", within: .days(365)).count >= 2 },
            ]))
        _ = try await SegmentMembership(client: client, logger: logger).refresh()
        // A sync with a history of runs and rows, as the runner records them.
        try await client.execute(
            """
            INSERT INTO cdp.syncs (name, definition, position)
            VALUES ('crm', '{"name": "crm", "source": {"segment": "repeat_buyers"}, "destination": {"type": "webhook"}}', 0)
            """)
        try await client.execute(
            """
            INSERT INTO cdp.sync_runs (sync, trigger, status, added, changed, delivered, rejected, started_at, finished_at, duration_ms)
            SELECT 'crm', 'schedule', 'partial', 600, 400, 980, 20, now() - r * interval '1 hour', now() - r * interval '1 hour', 900
            FROM generate_series(1, \(runs)) AS r
            """)
        try await client.execute(
            """
            INSERT INTO cdp.sync_run_rows (run_id, sync, key, operation, outcome, reason, recorded_at)
            SELECT r.run_id, 'crm', '"k' || n || '"', 'upsert', CASE WHEN n % 50 = 0 THEN 'rejected' ELSE 'delivered' END,
                   CASE WHEN n % 50 = 0 THEN 'invalid email' END, r.started_at
            FROM cdp.sync_runs AS r CROSS JOIN generate_series(1, 1000) AS n
            """)
        try await client.execute("ANALYZE")
        let profile = try await client.query(
            "SELECT profile_id FROM cdp.profile_data ORDER BY event_count DESC LIMIT 1"
        ).scalar(UUID.self)
        // The busiest profile may be a hub's own (a kiosk): search by an active identifier of the busiest other one.
        let identifier = try await client.query(
            """
            SELECT n.kind || ':' || n.value FROM cdp.identity_nodes AS n JOIN cdp.profile_data AS d USING (profile_id)
            WHERE n.status = 'active' ORDER BY d.event_count DESC LIMIT 1
            """
        ).scalar(String.self)
        let (_, secret) = try await APITokenStore(client: client).create(name: "console-bench", scopes: [.admin])
        say(
            "set up in \(fixed((ContinuousClock.now - started).seconds)) s; the busiest profile \(profile); search for \(identifier)"
        )

        let port = PortBox()
        var quiet = logger
        quiet.logLevel = .critical
        let app = buildApplication(
            configuration: ServerConfiguration(port: 0, console: true), client: client, logger: quiet,
            onListening: { await port.set($0) })
        let serving = Task { try await app.run() }
        let base = "http://127.0.0.1:\(try await port.wait())"
        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.redirectConfiguration = .disallow  // a redirect is an answer to time, not to follow
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
        let cookie = try await consoleSignIn(http, base: base, secret: secret)
        let pages = [
            ("overview", "/console"), ("live events", "/console/live"),
            ("profile search", "/console/profiles?q=\(identifier.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)"),
            ("profile", "/console/profiles/\(profile.uuidString.lowercased())"), ("segments", "/console/segments"),
            ("segment", "/console/segments/viewers_30d"), ("syncs", "/console/syncs"), ("sync", "/console/syncs/crm"),
            ("governance", "/console/governance"),
        ]
        print("")
        print("| page | path | p50 ms | p90 ms | max ms | bytes |")
        print("|---|---|---|---|---|---|")
        for (name, path) in pages {
            _ = try await Self.get(http, base + path, cookie: cookie)
            var times: [Double] = []
            var bytes = 0
            for _ in 0..<`repeat` {
                let clock = ContinuousClock.now
                bytes = try await Self.get(http, base + path, cookie: cookie)
                times.append((ContinuousClock.now - clock).seconds * 1000)
            }
            times.sort()
            print(
                "| \(name) | `\(path.prefix(60))` | \(fixed(times[times.count / 2])) | \(fixed(times[times.count * 9 / 10])) | \(fixed(times.last!)) | \(bytes) |"
            )
        }
        try await http.shutdown()
        serving.cancel()
        _ = try? await serving.value
        await client.shutdown()
    }

    /// GETs a page; returns its size. A non-200 answer (but a search's redirect) is an error.
    static func get(_ http: HTTPClient, _ url: String, cookie: String) async throws -> Int {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "cookie", value: cookie)
        let response = try await http.execute(request, timeout: .seconds(60))
        let body = try await response.body.collect(upTo: 64 * 1024 * 1024)
        guard response.status == .ok || response.status == .seeOther else {
            throw ValidationError("\(url): HTTP \(response.status.code): \(String(buffer: body).prefix(300))")
        }
        return body.readableBytes
    }
}
