// tributary-identity-bench: identity resolution at scale, against the baselines the identity issue names.
//
//   swift build -c release --product tributary-identity-bench && .build/release/tributary-identity-bench [--people 300000]
//
// Generates the multi-channel people data set (SyntheticPeople: web, app, email platform, POS, CRM, with family
// devices, shared emails, placeholder emails and kiosks; about 3.7 events per person) and measures, in one run:
//   1. ingest alone: the event writer storing every event into a fresh database (events/s);
//   2. the real-time identity stage catching up on those events (events/s);
//   3. ingest with identity kept current: the same events into a second fresh database while the stage runs
//      in the same process, timed until the last event is stored AND stamped (events/s, and the ratio to 1);
//   4. `identity rebuild` (SQL) with the graph current, and cold (graph and stamps cleared first);
//   5. baselines over the same edges: an in-memory union-find on integer ids, and a naive recursive CTE with
//      hubs included and with hubs excluded (each under a statement timeout).
// Accuracy (pairwise precision and recall against the generator's truth) is printed for the real-time result.
import ArgumentParser
import BenchmarkSupport
import Foundation
import Logging
import Postgres
import TributaryFixtures
import TributaryIdentity
import TributaryService

@main
struct IdentityBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tributary-identity-bench")

    @Option(help: "People to generate (about 3.7 events each).") var people = 300_000
    @Option(help: "Events per write in the ingest phases.") var writeSize = 2000
    @Option(help: "Seconds each naive recursive CTE may run (0 skips them).") var cteTimeout = 120
    @Flag(help: "Skip phase 3 (ingest with the stage running alongside), for quicker rebuild measurements.")
    var skipLive = false
    @Flag(help: "After ingest, only rebuild: cold (no graph yet), then with the graph current; print the phases and stop.")
    var rebuildOnly = false
    @Option(help: "Embedded data directory used when DATABASE_URL/PG* are unset.") var dataDir = ".tributary/bench-pgdata"
    @Option(help: "The rebuild's --memory-budget in MiB (the graph is computed in this process when the events fit).")
    var memoryBudget = 1024

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let server = try await DatabaseTarget.resolve(dataDirectory: dataDir, logger: logger).configuration
        let files = try ProjectFiles.locate()
        let version = try await PostgresConnection.connect(configuration: server, logger: logger).query("SHOW server_version")
            .scalar(String.self)
        var clock = ContinuousClock.now
        let data = SyntheticPeople.generate(SyntheticPeople.Options(people: people, seed: 42))
        let events = data.events
        say(
            "server: PostgreSQL \(version); \(ProcessInfo.processInfo.activeProcessorCount) cores; \(people) people, "
                + "\(events.count) events (generated in \(seconds(since: clock)) s)")

        // 1. Ingest alone.
        let alone = try await freshDatabase("tributary_identity_alone", on: server, files: files, logger: logger)
        let aloneClient = PostgresClient(configuration: alone, options: .init(maxConnections: 8), logger: logger)
        clock = .now
        try await ingest(events, into: aloneClient, writeSize: writeSize, logger: logger)
        let ingestSeconds = elapsed(since: clock)
        let ingestRate = Double(events.count) / ingestSeconds
        say(String(format: "1. ingest alone:                    %7.0f events/s (%.1f s)", ingestRate, ingestSeconds))

        if rebuildOnly {
            var rebuild = IdentityRebuild(configuration: alone, logger: logger)
            rebuild.memoryBudget = memoryBudget << 20
            let cold = try await rebuild.run()
            let warm = try await rebuild.run()
            say(
                "4. rebuild (graph current): \(fixed(warm.seconds)) s; cold (no graph, no stamps): \(fixed(cold.seconds)) s "
                    + "(\(warm.identifiers) identifiers, \(warm.edges) edges, \(warm.hubs) hubs, \(warm.components) components, "
                    + "\(warm.conflictComponents) replayed; changed \(warm.nodesChanged) identifiers, \(warm.eventsRestamped) stamps; "
                    + "graph \(warm.inMemory ? "in memory" : "in PostgreSQL") within a \(memoryBudget) MiB budget)"
            )
            Self.phaseTable(warm, cold)
            await aloneClient.shutdown()
            return
        }

        // 2. The real-time stage over the backlog.
        clock = .now
        let stage = IdentityStage(client: aloneClient, logger: logger, batchSize: 5000)
        let processed = try await stage.catchUp()
        let stageSeconds = elapsed(since: clock)
        say(
            String(
                format: "2. real-time stage, backlog:        %7.0f events/s (%.1f s; %d profiles created, %d merges, %d hubs)",
                Double(processed.events) / stageSeconds, stageSeconds, processed.profilesCreated, processed.merges,
                processed.hubsDetected))
        let partition = try await Self.partition(aloneClient)
        let scores = SyntheticPeople.pairwiseScores(truth: data.truth, predicted: partition)
        let twoUsers = try await aloneClient.query(
            """
            SELECT count(*) FROM (SELECT profile_id FROM cdp.identities WHERE kind = 'user_id' GROUP BY 1 HAVING count(*) > 1) AS p
            """
        ).scalar(Int.self)
        say(
            String(
                format: "   accuracy: pairwise precision %.5f, recall %.5f over %d identifiers; profiles with two user ids: %d",
                scores.precision, scores.recall, scores.scoredIdentifiers, twoUsers))

        if !skipLive {
            // 3. Ingest with the stage running alongside, until everything is stored and stamped.
            let both = try await freshDatabase("tributary_identity_both", on: server, files: files, logger: logger)
            let bothClient = PostgresClient(configuration: both, options: .init(maxConnections: 8), logger: logger)
            let liveStage = IdentityStage(client: bothClient, logger: logger, batchSize: 5000)
            clock = .now
            let runner = Task { try await liveStage.run(pollInterval: .milliseconds(200)) }
            try await ingest(events, into: bothClient, writeSize: writeSize, logger: logger)
            let storedAt = elapsed(since: clock)
            let last = try await bothClient.query("SELECT max(seq) FROM cdp.events").scalar(Int64.self)
            while try await bothClient.query("SELECT seq FROM cdp.stage_checkpoints WHERE stage = 'identity'").first?[0].decode(
                Int64.self) ?? 0 < last
            {
                try await Task.sleep(for: .milliseconds(20))
            }
            let bothSeconds = elapsed(since: clock)
            runner.cancel()
            _ = try? await runner.value
            let bothRate = Double(events.count) / bothSeconds
            say(
                String(
                    format:
                        "3. ingest + identity kept current:  %7.0f events/s (%.1f s; all stored at %.1f s) = %.2fx ingest alone",
                    bothRate, bothSeconds, storedAt, bothRate / ingestRate))
            // Receive order differs from run 1 (concurrent writers), so only accuracy is comparable.
            let liveScores = SyntheticPeople.pairwiseScores(truth: data.truth, predicted: try await Self.partition(bothClient))
            say(String(format: "   accuracy: pairwise precision %.5f, recall %.5f", liveScores.precision, liveScores.recall))
            await bothClient.shutdown()
        }

        // 4. Rebuild, with the graph current and cold.
        var rebuild = IdentityRebuild(configuration: alone, logger: logger)
        rebuild.memoryBudget = memoryBudget << 20
        let warm = try await rebuild.run()
        say(
            String(
                format:
                    "4. rebuild (graph current):         %7.2f s  (%d identifiers, %d edges, %d hubs, %d components, %d replayed; changed %d identifiers, %d stamps)",
                warm.seconds, warm.identifiers, warm.edges, warm.hubs, warm.components, warm.conflictComponents,
                warm.nodesChanged, warm.eventsRestamped))

        try await aloneClient.withConnection { db in
            try await db.script(
                """
                TRUNCATE cdp.identity_nodes, cdp.identity_edges, cdp.identity_profiles, cdp.profile_merge_log, cdp.profile_redirects;
                UPDATE cdp.events SET profile_id = NULL;
                UPDATE cdp.stage_checkpoints SET seq = 0;
                """)
            try await db.execute("VACUUM ANALYZE cdp.events")
        }
        let cold = try await rebuild.run()
        say(
            String(
                format: "   rebuild (cold: empty graph, no stamps): %.2f s (stamped %d events)", cold.seconds,
                cold.eventsRestamped))
        Self.phaseTable(warm, cold)
        say("   same graph as the real-time stage: \(try await Self.partition(aloneClient) == partition)")

        // 5. Baselines over the same edges.
        clock = .now
        let edges = try await aloneClient.query(
            """
            SELECT e.a, e.b FROM cdp.identity_edges AS e
            JOIN cdp.identity_nodes AS x ON x.node_id = e.a AND x.status = 'active'
            JOIN cdp.identity_nodes AS y ON y.node_id = e.b AND y.status = 'active'
            """)
        var pairs: [(Int, Int)] = []
        pairs.reserveCapacity(edges.count)
        var largest = 0
        for row in edges {
            let (a, b) = try row.decode((Int, Int).self)
            pairs.append((a, b))
            largest = max(largest, a, b)
        }
        let fetchSeconds = elapsed(since: clock)
        clock = .now
        var parent = Array(0...largest)
        func find(_ x: Int) -> Int {
            var x = x
            while parent[x] != x {
                parent[x] = parent[parent[x]]
                x = parent[x]
            }
            return x
        }
        for (a, b) in pairs {
            let ra = find(a), rb = find(b)
            if ra != rb { parent[max(ra, rb)] = min(ra, rb) }
        }
        var roots = Set<Int>()
        for (a, _) in pairs { roots.insert(find(a)) }
        let unionSeconds = elapsed(since: clock)
        say(
            String(
                format:
                    "5. in-memory union-find (integer ids) over the %d non-hub edges: %.3f s (fetching them: %.2f s); %d multi-identifier components",
                pairs.count, unionSeconds, fetchSeconds, roots.count))
        let baseline = unionSeconds + fetchSeconds
        say(
            "   rebuild / union-find baseline (fetch + union-find): graph current \(fixed(warm.seconds / baseline))x, cold "
                + "\(fixed(cold.seconds / baseline))x")
        for (label, filter) in [("hubs excluded", "WHERE x.status = 'active' AND y.status = 'active'"), ("hubs included", "")]
        where cteTimeout > 0 {
            let seconds = try await naiveCTE(aloneClient, filter: filter)
            say(
                "   naive recursive CTE, \(label): "
                    + (seconds.map { String(format: "%.2f s", $0) } ?? "did not finish in \(cteTimeout) s"))
        }
        await aloneClient.shutdown()
    }

    /// Connected components with a plain recursive CTE: every node reaches every node of its component.
    func naiveCTE(_ client: PostgresClient, filter: String) async throws -> Double? {
        try await client.withConnection { db in
            try await db.execute(PostgresQuery(unsafeSQL: "SET statement_timeout = '\(cteTimeout)s'"))
            let clock = ContinuousClock.now
            defer { Task { try? await db.execute("RESET statement_timeout") } }
            do {
                _ = try await db.query(
                    PostgresQuery(
                        unsafeSQL: """
                            WITH RECURSIVE adjacent AS (
                                SELECT e.a AS node, e.b AS other FROM cdp.identity_edges AS e
                                JOIN cdp.identity_nodes AS x ON x.node_id = e.a JOIN cdp.identity_nodes AS y ON y.node_id = e.b \(filter)
                                UNION ALL
                                SELECT e.b, e.a FROM cdp.identity_edges AS e
                                JOIN cdp.identity_nodes AS x ON x.node_id = e.a JOIN cdp.identity_nodes AS y ON y.node_id = e.b \(filter)
                            ), reach (node, root) AS (
                                SELECT DISTINCT node, node FROM adjacent
                                UNION
                                SELECT a.other, r.root FROM reach AS r JOIN adjacent AS a ON a.node = r.node
                            )
                            SELECT count(DISTINCT component) FROM (SELECT node, min(root) AS component FROM reach GROUP BY node) AS c
                            """))
                try await db.execute("RESET statement_timeout")
                return elapsed(since: clock)
            } catch let error as PostgresError where error.sqlState == SQLState.queryCanceled {
                try await db.execute("RESET statement_timeout")
                return nil
            }
        }
    }

    /// One line per rebuild phase: seconds with the graph current, and cold.
    static func phaseTable(_ warm: IdentityRebuild.Report, _ cold: IdentityRebuild.Report) {
        say("   phase                                  graph current      cold")
        for (index, (name, seconds)) in warm.phases.enumerated() {
            let coldSeconds = index < cold.phases.count ? cold.phases[index].1 : .nan
            say("   \(name.padding(toLength: 40, withPad: " ", startingAt: 0)) \(fixed(seconds)) s   \(fixed(coldSeconds)) s")
        }
    }

    static func partition(_ client: PostgresClient) async throws -> [String: String] {
        var result: [String: String] = [:]
        for row in try await client.query("SELECT kind || ':' || value, profile_id::text FROM cdp.identities") {
            let (key, profile) = try row.decode((String, String).self)
            result[key] = profile
        }
        return result
    }
}
