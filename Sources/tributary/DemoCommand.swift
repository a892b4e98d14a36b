import ArgumentParser
import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Postgres
import ServiceLifecycle
import TributaryCollection
import TributaryDestinations
import TributaryFixtures
import TributaryIdentity
import TributaryModel
import TributaryPredictions
import TributaryProfiles
import TributarySegments
import TributaryServer
import TributaryService
import TributarySyncs

extension TributaryCommand {
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: """
                The whole path on the embedded default: start the database, migrate, collect multi-channel sample events over \
                HTTP, resolve identities, build profiles, apply segments, run a scheduled sync to a file and a real-time sync \
                to a local webhook, and measure live events end to end.
                """)
        @OptionGroup var global: GlobalOptions

        @Option(help: "Sample people to generate.") var people = 200
        @Option(help: "Live events sent through the real-time path at the end.") var live = 10
        @Flag(help: "At the end, keep serving the collection API and the web console (an admin token is printed) until Ctrl-C.")
        var stay = false

        func run() async throws {
            let logger = global.makeLogger()
            let started = ContinuousClock.now
            let target = try await global.resolveTarget(logger: logger)
            let migrator = Migrator(files: try ProjectFiles.locate(), logger: logger)
            try await target.withClient(logger: logger) { client in
                let report = try await migrator.migrate(client)
                let version = try await client.query("SHOW server_version").scalar(String.self)
                print("Tributary \(Tributary.version) demo")
                print("  database      PostgreSQL \(version), \(target.summary)")
                if case .embedded(let server) = target.source { print("  connect       psql \"\(try server.url())\"") }
                print(
                    "  migrations    \(report.applied.count) applied now, \(report.alreadyApplied) already applied; "
                        + "schema version \(try await client.query("SELECT version FROM cdp.schema_version").scalar(Int.self))")

                // Collection: a source, the HTTP API on an ephemeral port, sample traffic through it (sent twice: the
                // second time is a client retrying, and must store nothing).
                let sources = SourceStore(client: client)
                let key =
                    try await sources.list().contains { $0.name == "demo-web" }
                    ? try await sources.rotateKey(name: "demo-web").writeKey
                    : try await sources.create(name: "demo-web").writeKey
                let collected = try await collect(client: client, key: key, logger: logger)
                print(
                    "  collection    \(collected.requests) batches over HTTP: \(collected.stored) events stored, "
                        + "\(collected.duplicates) retried duplicates ignored; p50 \(collected.p50) ms, max \(collected.max) ms per batch"
                )

                let totals = try await client.query(
                    """
                    SELECT count(*), count(DISTINCT coalesce(user_id, anonymous_id)), count(DISTINCT tableoid), max(seq)
                    FROM cdp.events
                    """
                ).first!
                let (events, people, partitions, lastSeq) = try totals.decode((Int, Int, Int, Int?).self)
                print(
                    "  cdp.events    \(events) events from \(people) user or anonymous ids in \(partitions) monthly partitions; "
                        + "receive sequence at \(lastSeq ?? 0)")
                let byType = try await client.query("SELECT type, count(*) FROM cdp.events GROUP BY 1 ORDER BY 2 DESC")
                let summary = try byType.map { row -> String in
                    let (type, count) = try row.decode((String, Int).self)
                    return "\(type) \(count)"
                }
                print("                \(summary.joined(separator: ", "))")

                // Identity: stamp every event with a profile, then show one person's profile as explain prints it.
                let identity = try await IdentityStage(client: client, logger: logger).catchUp()
                let graph = try await client.query(
                    """
                    SELECT (SELECT count(*) FROM cdp.identity_profiles), (SELECT count(*) FROM cdp.identities),
                           (SELECT count(*) FROM cdp.profile_merges), (SELECT count(*) FROM cdp.events WHERE profile_id IS NOT NULL)
                    """
                ).first!
                let (profiles, identifiers, merges, stamped) = try graph.decode((Int, Int, Int, Int).self)
                print(
                    "  identity      \(identity.events) new events resolved; \(identifiers) identifiers in \(profiles) profiles, "
                        + "\(merges) merges recorded, \(stamped) events carry a profile_id")
                if let sample = try await client.query(
                    """
                    SELECT i.value FROM cdp.identities AS i WHERE i.kind = 'email'
                    ORDER BY (SELECT count(*) FROM cdp.identities AS j WHERE j.profile_id = i.profile_id) DESC, i.value LIMIT 1
                    """
                ).first.map({ try $0[0].decode(String.self) }) {
                    let explained = try await IdentityAdmin(client: client, logger: logger)
                        .explain(Identifier(kind: "email", value: sample))
                    print("  explain       tributary identity explain email:\(sample)")
                    for line in explained.split(separator: "\n", omittingEmptySubsequences: false).prefix(14) {
                        print("                \(line)")
                    }
                }
                try await showProfiles(client: client, logger: logger)
                try await showPredictions(client: client, logger: logger)
                try await showSegments(client: client, logger: logger)
                let latencies = try await showSyncs(client: client, logger: logger, key: key)
                try await printSummary(client: client, latencies: latencies)
                let elapsed = ContinuousClock.now - started
                print("  took          \(elapsed.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow)))")
                print(
                    "Try: tributary serve, then curl -u \"$KEY:\" -d '{\"userId\":\"u1\",\"event\":\"Signed Up\"}' localhost:8080/v1/track"
                )
            }
        }

        /// Applies the example computed traits, runs the profile stage and prints the richest profile.
        func showProfiles(client: PostgresClient, logger: Logger) async throws {
            let file = try ProjectFiles.locate().root.appendingPathComponent("examples/computed-traits.json")
            let admin = ProfileAdmin(client: client, logger: logger)
            let definitions = try await admin.load(try Data(contentsOf: file))
            try await admin.apply(definitions)
            let stage = Pipeline.profileStage(client: client, logger: logger)
            let report = try await stage.catchUp()
            _ = try await stage.recomputeAll()
            let counts = try await client.query(
                """
                SELECT (SELECT count(*) FROM cdp.profiles WHERE event_count > 0), (SELECT count(*) FROM cdp.trait_changes),
                       (SELECT count(*) FROM cdp.profiles WHERE rfm_score IS NOT NULL)
                """
            ).first!.decode((Int, Int, Int).self)
            print(
                "  profiles      \(report.events) new events merged into \(counts.0) profiles: \(counts.1) trait changes recorded, "
                    + "\(definitions.computedTraits.count) computed traits (examples/computed-traits.json), RFM scores for \(counts.2) buyers"
            )
            guard
                let row = try await client.query(
                    """
                    SELECT profile_id::text, jsonb_pretty(traits), orders, lifetime_value, favourite_category #>> '{}', rfm_score
                    FROM cdp.profiles ORDER BY orders DESC NULLS LAST, categories_viewed DESC NULLS LAST, event_count DESC, profile_id LIMIT 1
                    """
                ).first
            else { return }
            let (id, traits, orders, value, favourite, rfm) = try row.decode(
                (String, String, Int?, Double?, String?, String?).self)
            print(
                "  top profile   \(id): \(orders ?? 0) orders, lifetime value \(value.map { String(format: "%.2f", $0) } ?? "-"), "
                    + "favourite category \(favourite ?? "-"), RFM \(rfm ?? "-")")
            for line in traits.split(separator: "\n") { print("                \(line)") }
            if case .found(let document) = try await ProfileDocuments(client: client).lookup(
                kind: "profile_id", value: id, events: 2)
            {
                let pretty = (try? JSONParser.parse(Array(document.utf8)).prettyPrinted) ?? document
                print(
                    "  profile API   GET /v1/profiles/profile_id/\(id)?events=2 (Authorization: Bearer <tributary tokens create NAME>):"
                )
                for line in pretty.split(separator: "\n").prefix(12) { print("                \(line)") }
                print("                …")
            }
            print(
                "  analysts      SELECT profile_id, lifetime_value, rfm_score, traits->>'email' FROM cdp.profiles ORDER BY lifetime_value DESC NULLS LAST"
            )
        }

        /// Fits, trains and computes the models of the example file's predictive traits; prints what they give.
        func showPredictions(client: PostgresClient, logger: Logger) async throws {
            let definitions = try await ProfileAdmin(client: client, logger: logger).current()
            let outcomes = try await PredictiveTraits(client: client, logger: logger).apply(definitions)
            for outcome in outcomes {
                print("  predictions   \(outcome.trait): \(outcome.action)")
            }
            let (alive, value) = try await client.query(
                "SELECT avg(chance_alive), sum(predicted_clv) FROM cdp.profiles"
            ).first!.decode((Double?, Double?).self)
            if let alive {
                print(
                    "                "
                        + String(format: "mean chance_alive %.2f", alive)
                        + (value.map { String(format: ", predicted 365-day value %.0f", $0) } ?? ""))
            }
            let sample = try await client.query(
                """
                SELECT profile_id::text, string_agg(product_id, ', ' ORDER BY rank) FROM cdp.profile_recommendations
                WHERE source = 'similar' GROUP BY profile_id ORDER BY profile_id LIMIT 1
                """
            ).first?.decode((String, String).self)
            if let sample { print("  recommend     \(sample.0): \(sample.1)") }
            print(
                "  analysts      SELECT profile_id, chance_alive, predicted_clv, churn_30d, next_products FROM cdp.profiles "
                    + "ORDER BY predicted_clv DESC NULLS LAST; tributary predictions show")
        }

        /// Applies the example segments, refreshes their members and prints their sizes and one compiled view.
        func showSegments(client: PostgresClient, logger: Logger) async throws {
            let file = try ProjectFiles.locate().root.appendingPathComponent("examples/segments.json")
            let store = SegmentStore(client: client, logger: logger)
            let definitions = try await store.load(try Data(contentsOf: file))
            try await store.apply(definitions)
            let report = try await SegmentMembership(client: client, logger: logger).refresh()
            print(
                "  segments      \(definitions.segments.count) segments (examples/segments.json) compiled to views segments.\"name\"; "
                    + "\(report.entered) memberships entered")
            for segment in try await store.list() {
                print(
                    "                \(segment.name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(String(segment.members).padding(toLength: 5, withPad: " ", startingAt: 0)) "
                        + "\(segment.realtime ? "real-time" : "scheduled")  \(segment.description ?? "")")
            }
            let (view, _) = try await store.sql("recent_buyers")
            print("  segment SQL   tributary segments show recent_buyers --sql")
            for line in view.split(separator: "\n") { print("                \(line)") }
            print(
                "  analysts      SELECT * FROM segments.recent_buyers ORDER BY lifetime_value DESC; SELECT * FROM cdp.segment_history"
            )
        }

        /// Applies the example syncs (a segment to a file, another to a webhook receiver run by the demo) and runs them.
        func showSyncs(client: PostgresClient, logger: Logger, key: String) async throws -> [Int] {
            let file = try ProjectFiles.locate().root.appendingPathComponent("examples/syncs.json")
            let secret = "demo-\(UUID().uuidString.prefix(8))"
            let receiver = DemoReceiver(secret: secret)
            return try await receiver.serve { url in
                var environment = ProcessInfo.processInfo.environment
                environment["TRIBUTARY_DEMO_WEBHOOK_URL"] = url
                environment["TRIBUTARY_DEMO_WEBHOOK_SECRET"] = secret
                let registry = DestinationRegistry.standard()
                let store = SyncStore(client: client, logger: logger, registry: registry)
                let definitions = try await store.load(try Data(contentsOf: file))
                try await store.apply(definitions)
                let runner = SyncRunner(client: client, logger: logger, registry: registry, environment: environment)
                print(
                    "  syncs         \(definitions.syncs.count) syncs (examples/syncs.json); run now (tributary worker runs them on their schedules):"
                )
                for sync in definitions.syncs {
                    let report = try await runner.run(sync.name)
                    let millis = report.duration.milliseconds
                    print(
                        "                \(sync.name) (\(sync.mode.rawValue) → \((sync.destination["type"] ?? .null).plainText)): "
                            + "\(report.status.rawValue), +\(report.added) ~\(report.changed) -\(report.removed), \(report.delivered) delivered "
                            + "in \(report.batches) batches, \(millis) ms")
                }
                let exports = try await client.query(
                    """
                    SELECT run_id FROM cdp.sync_runs WHERE sync = 'recent_buyers_export' AND delivered > 0 ORDER BY run_id DESC LIMIT 1
                    """
                ).first.map { try $0[0].decode(Int64.self) }
                if let exports {
                    print("                file: .tributary/exports/recent_buyers_export-\(exports).jsonl")
                }
                let (requests, changes, bad, sample) = await (
                    receiver.requests, receiver.changes, receiver.badSignatures, receiver.sample
                )
                print(
                    "                webhook receiver: \(requests) requests, \(changes) changes, \(bad) bad signatures"
                        + (sample.map { "; first change \($0.prefix(160))" } ?? ""))
                print("  reverse ETL   tributary syncs status; tributary syncs run NAME --dry-run; SELECT * FROM cdp.sync_runs")
                return try await showRealtime(
                    client: client, logger: logger, key: key, receiver: receiver, registry: registry, environment: environment)
            }
        }

        /// Runs the real-time path as `tributary serve` and `tributary worker` run it (HTTP API, identity and profile
        /// stages, real-time activation, each woken by NOTIFY), sends live events that qualify profiles for the
        /// real-time segment, and measures each from its HTTP 200 to the webhook receiving the profile.
        func showRealtime(
            client: PostgresClient, logger: Logger, key: String, receiver: DemoReceiver, registry: DestinationRegistry,
            environment: [String: String]
        ) async throws -> [Int] {
            // Identified people with Marketing consent who are not in browsed_not_bought: a product view puts them in.
            let candidates = try await client.query(
                """
                SELECT DISTINCT ON (p.profile_id) i.value, p.traits ->> 'email'
                FROM cdp.profiles AS p
                JOIN cdp.identities AS i ON i.profile_id = p.profile_id AND i.kind = 'user_id'
                JOIN cdp.consent AS c ON c.profile_id = p.profile_id AND c.purpose = 'Marketing' AND c.granted
                WHERE p.traits ? 'email'
                  AND NOT EXISTS (SELECT 1 FROM cdp.segment_members AS m WHERE m.segment = 'browsed_not_bought' AND m.profile_id = p.profile_id)
                ORDER BY p.profile_id LIMIT \(live)
                """
            ).map { try $0.decode((String, String).self) }
            // A demo run again on the same data finds everyone in the segment already: new people fill up the live
            // events, so the real-time path is shown on every run (each is identified, with Marketing consent, first).
            let token = String(UUID().uuidString.prefix(8)).lowercased()
            let people =
                candidates.map { (user: $0.0, email: $0.1, new: false) }
                + (0..<max(0, live - candidates.count)).map {
                    (user: "live-\(token)-\($0)", email: "live.\(token).\($0)@example.com", new: true)
                }
            let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
            var stageLogger = logger
            stageLogger.logLevel = max(logger.logLevel, .warning)
            let quiet = stageLogger
            // The server is stopped by cancellation at the end, which it logs as an error: keep it quiet.
            stageLogger.logLevel = .critical
            // The stages and real-time activation as `serve` and `worker` assemble them.
            let pipeline = Pipeline(
                configuration: client.configuration, process: "demo",
                options: .init(identity: true, profiles: true, realtime: true), destinations: registry,
                environment: environment, logger: quiet)
            let app = buildApplication(
                configuration: ServerConfiguration(
                    host: "127.0.0.1", port: 0, destinations: .standard(), profileHints: pipeline.profileHints, console: true),
                client: client, logger: stageLogger,
                onListening: { portSink.yield($0) })
            let latencies: [Int]
            do {
                latencies = try await measureLive(
                    app: app, pipeline: pipeline, ports: ports, people: people, key: key, receiver: receiver, client: client)
            } catch {
                await pipeline.shutdown()
                throw error
            }
            await pipeline.shutdown()
            return latencies
        }

        /// Runs the server and the pipeline, sends the live events, and returns each one's HTTP 200 → webhook time.
        private func measureLive(
            app: some ApplicationProtocol, pipeline: Pipeline, ports: AsyncStream<Int>,
            people: [(user: String, email: String, new: Bool)], key: String, receiver: DemoReceiver, client: PostgresClient
        ) async throws -> [Int] {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await app.runService() }
                for service in pipeline.services { group.addTask { try await service.run() } }
                defer { group.cancelAll() }
                var iterator = ports.makeAsyncIterator()
                guard let port = await iterator.next() else { throw CLIError("the demo server did not start") }
                // Let the activation see the sync once (its first pass) before the live events.
                try await Task.sleep(for: .milliseconds(500))
                var latencies: [Int] = []
                func send(_ body: JSONValue, to path: String) async throws {
                    let (status, _) = try await Self.post(body, to: port, path: path, key: key, timeout: .seconds(10))
                    guard status == .ok else { throw CLIError("the collection API answered \(status.code)") }
                }
                for (index, (user, email, new)) in people.enumerated() {
                    if new {
                        let identify: JSONValue = [
                            "userId": .string(user), "messageId": "demo-live-\(UUID().uuidString)",
                            "traits": ["email": .string(email)],
                            "context": ["consent": ["categoryPreferences": ["Marketing": true]]],
                        ]
                        try await send(identify, to: "/v1/identify")
                    }
                    let body: JSONValue = [
                        "userId": .string(user), "event": "Product Viewed", "messageId": "demo-live-\(UUID().uuidString)",
                        "properties": ["product_id": "sku-200", "name": "Rain Jacket", "category": "outdoor", "price": 129.0],
                    ]
                    try await send(body, to: "/v1/track")
                    let acknowledged = ContinuousClock.now
                    if let arrived = await receiver.arrival(of: email, timeout: .seconds(10)) {
                        latencies.append(Int((arrived - acknowledged).milliseconds))
                    }
                    if index == 0 {
                        print(
                            "  real-time     live: POST /v1/track {\"userId\": \"\(user)\", \"event\": \"Product Viewed\"} → HTTP 200 → identity → "
                                + "profile → segment browsed_not_bought → outbox → webhook")
                    }
                }
                latencies.sort()
                if latencies.isEmpty {
                    print("                no live event reached the webhook within 10 s")
                } else {
                    print(
                        "                \(people.count) live events, \(latencies.count) delivered to the webhook (sync browsed_not_bought_hook, "
                            + "\"realtime\": true, purposes [Marketing]); HTTP 200 → webhook p50 \(latencies[latencies.count / 2]) ms, "
                            + "max \(latencies.last!) ms")
                }
                if stay {
                    let (_, secret) = try await APITokenStore(client: client).create(
                        name: "demo-console-\(UUID().uuidString.prefix(8).lowercased())", scopes: [.admin])
                    print("  console       http://127.0.0.1:\(port)/console — sign in with \(secret)")
                    print("                (collecting on http://127.0.0.1:\(port) with write key \(key); Ctrl-C to stop)")
                    fflush(nil)  // every stream: the lines above must show before the wait
                    while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) }
                } else {
                    print("  console       tributary demo --stay keeps it open at the end; tributary serve --console serves it")
                }
                return latencies
            }
        }

        /// The tour in a few lines.
        func printSummary(client: PostgresClient, latencies: [Int]) async throws {
            let (profiles, merges, delivered, members) = try await client.query(
                """
                SELECT (SELECT count(*) FROM cdp.profiles), (SELECT count(*) FROM cdp.profile_merges),
                       (SELECT coalesce(sum(delivered), 0)::bigint FROM cdp.sync_runs), (SELECT count(*) FROM cdp.segment_members)
                """
            ).first!.decode((Int, Int, Int, Int).self)
            let sizes = try await client.query(
                """
                SELECT d.name, count(m.profile_id) FROM cdp.segment_definitions AS d
                LEFT JOIN cdp.segment_members AS m ON m.segment = d.name GROUP BY d.name, d.position ORDER BY d.position
                """
            ).map { row -> String in
                let (name, count) = try row.decode((String, Int).self)
                return "\(name) \(count)"
            }
            print(
                "  summary       \(profiles) profiles, \(merges) merges; \(members) segment memberships (\(sizes.joined(separator: ", "))); "
                    + "\(delivered) rows delivered by syncs"
                    + (latencies.isEmpty
                        ? ""
                        : "; real-time HTTP 200 → webhook p50 \(latencies[latencies.count / 2]) ms, max \(latencies.last!) ms"))
        }

        struct Collected {
            var requests = 0
            var stored = 0
            var duplicates = 0
            var p50 = 0
            var max = 0
        }

        /// Runs the collection API in this process and posts the sample batches to it.
        func collect(client: PostgresClient, key: String, logger: Logger) async throws -> Collected {
            let (portStream, portContinuation) = AsyncStream.makeStream(of: Int.self)
            var serverLogger = logger
            serverLogger.logLevel = max(logger.logLevel, .critical)
            let app = buildApplication(
                configuration: ServerConfiguration(host: "127.0.0.1", port: 0), client: client, logger: serverLogger,
                onListening: { port in portContinuation.yield(port) })
            let services = ServiceGroup(services: [app], gracefulShutdownSignals: [], logger: serverLogger)
            let server = Task { try await services.run() }
            var ports = portStream.makeAsyncIterator()
            guard let port = await ports.next() else { throw CLIError("the demo server did not start") }
            do {
                let result = try await post(to: port, key: key)
                await services.triggerGracefulShutdown()
                try await server.value
                return result
            } catch {
                await services.triggerGracefulShutdown()
                throw error
            }
        }

        /// POSTs a JSON object to the demo's collection API with the write key; returns the status and the body.
        static func post(
            _ object: JSONValue, to port: Int, path: String, key: String, timeout: TimeAmount
        ) async throws -> (HTTPResponseStatus, ByteBuffer) {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Basic " + Data("\(key):".utf8).base64EncodedString())
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: object.serialized))
            let response = try await HTTPClient.shared.execute(request, timeout: timeout)
            return (response.status, try await response.body.collect(upTo: 1 << 20))
        }

        /// Posts the sample batches twice (the second time as a client retry would) and measures each request.
        func post(to port: Int, key: String) async throws -> Collected {
            let batches = SampleEvents(people: people).batches()
            var result = Collected()
            var latencies: [Int] = []
            for _ in 0..<2 {
                for batch in batches {
                    let sent = ContinuousClock.now
                    let (status, body) = try await Self.post(batch, to: port, path: "/v1/batch", key: key, timeout: .seconds(30))
                    latencies.append(Int((ContinuousClock.now - sent).milliseconds))
                    guard status == .ok, let answer = try? JSONParser.parse(Array(body.readableBytesView)) else {
                        throw CLIError("the collection API answered \(status.code): \(String(buffer: body))")
                    }
                    result.requests += 1
                    result.stored += Int(answer["stored"]?.plainText ?? "") ?? 0
                    result.duplicates += Int(answer["duplicates"]?.plainText ?? "") ?? 0
                }
            }
            latencies.sort()
            result.p50 = latencies[latencies.count / 2]
            result.max = latencies.last ?? 0
            return result
        }
    }
}
