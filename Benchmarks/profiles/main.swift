// tributary-profiles-bench: unified profiles at scale (issue: 300k profiles, 1M events).
//
//   swift build -c release --product tributary-profiles-bench && .build/release/tributary-profiles-bench
//
// Prepares a database with the multi-channel people data set (SyntheticPeople, 300k people, about 1.1M events)
// ingested and resolved by the identity stage (or copies one with --template), applies the ten example computed
// traits (examples/computed-traits.json) plus RFM, and measures in one run:
//   1. the profile stage over the whole backlog (trait merge, profile data, computed traits for touched profiles);
//   2. incremental maintenance: 20k new events for existing people, sent live, then the identity and profile stages;
//   3. the bulk recompute of the computed traits (time windows, RFM), three times;
//   4. the baseline: the same aggregates as one hand-written SELECT over the events, no writes;
//   5. `profiles rebuild` from events.
import ArgumentParser
import BenchmarkSupport
import Foundation
import Logging
import Postgres
import TributaryFixtures
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributarySegments
import TributaryService

@main
struct ProfilesBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tributary-profiles-bench")

    @Option(help: "People to generate (about 3.7 events each).") var people = 300_000
    @Option(help: "Copy this database (events ingested and resolved) instead of generating one.") var template: String?
    @Option(help: "Live events sent for the incremental measurement.") var liveEvents = 20_000
    @Option(help: "Embedded data directory used when DATABASE_URL/PG* are unset.") var dataDir = ".tributary/bench-pgdata"

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let server = try await DatabaseTarget.resolve(dataDirectory: dataDir, logger: logger).configuration
        let files = try ProjectFiles.locate()
        let name = "tributary_profiles_bench"
        let admin = try await PostgresConnection.connect(configuration: server.with(database: "postgres"), logger: logger)
        let version = try await admin.query("SHOW server_version").scalar(String.self)
        try await admin.execute("DROP DATABASE IF EXISTS \(identifier: name) WITH (FORCE)")
        var clock = ContinuousClock.now
        let data = SyntheticPeople.generate(SyntheticPeople.Options(people: people, seed: 42))
        if let template {
            try await admin.execute("CREATE DATABASE \(identifier: name) TEMPLATE \(identifier: template)")
            say("database: copied \(template) in \(seconds(since: clock)) s")
        } else {
            try await admin.execute("CREATE DATABASE \(identifier: name)")
        }
        await admin.close()
        let configuration = server.with(database: name)
        let client = PostgresClient(configuration: configuration, options: .init(maxConnections: 8), logger: logger)
        clock = .now
        try await Migrator(files: files, logger: logger).migrate(client)
        say("migrate: \(seconds(since: clock)) s")
        if template == nil {
            clock = .now
            try await ingest(data.events, into: client, writeSize: 2000, logger: logger)
            _ = try await IdentityStage(client: client, logger: logger).catchUp()
            say("prepared: \(data.events.count) events ingested and resolved in \(seconds(since: clock)) s")
        }
        try await client.execute("VACUUM ANALYZE")
        let (events, profiles) = try await client.query(
            """
            SELECT (SELECT count(*) FROM cdp.events), (SELECT count(*) FROM cdp.identity_profiles)
            """
        ).first!.decode((Int, Int).self)
        say(
            "server: PostgreSQL \(version); \(ProcessInfo.processInfo.activeProcessorCount) cores; \(events) events, \(profiles) profiles"
        )

        let definitions = try ComputedTraitDefinitions.parse(
            try Data(contentsOf: files.root.appendingPathComponent("examples/computed-traits.json")))
        try await ProfileAdmin(client: client, logger: logger).apply(definitions)
        say("computed traits: \(definitions.computedTraits.count) + RFM")

        // 1. The profile stage over the backlog.
        let stage = ProfileStage(client: client, logger: logger, batchSize: 5000, followers: [RealtimeSegments()])
        clock = .now
        let backlog = try await stage.catchUp()
        let backlogSeconds = elapsed(since: clock)
        say(
            String(
                format: "1. profile stage, backlog:      %7.0f events/s (%.1f s, %.0f µs/event; %d profiles, %d trait changes)",
                Double(backlog.events) / backlogSeconds, backlogSeconds, backlogSeconds * 1e6 / Double(backlog.events),
                backlog.profilesUpdated, backlog.traitChanges))

        // 2. Live events for existing people: the same people's calls again, as new messages, now.
        var live = Array(data.events.prefix(liveEvents))
        let now = Date()
        for index in live.indices {
            live[index].messageID = "live-\(index)"
            live[index].timestamp = now.addingTimeInterval(Double(index - live.count) / 1000)
            live[index].receivedAt = now
        }
        try await ingest(live, into: client, writeSize: 2000, logger: logger)
        clock = .now
        _ = try await IdentityStage(client: client, logger: logger).catchUp()
        let identitySeconds = elapsed(since: clock)
        clock = .now
        let incremental = try await stage.catchUp()
        let incrementalSeconds = elapsed(since: clock)
        say(
            String(
                format:
                    "2. incremental, %d live events: profile stage %.2f s = %.0f µs/event (%.0f events/s; identity stage %.2f s); %d profiles updated",
                incremental.events, incrementalSeconds, incrementalSeconds * 1e6 / Double(max(incremental.events, 1)),
                Double(incremental.events) / incrementalSeconds, identitySeconds, incremental.profilesUpdated))

        // 3. Bulk recompute: all ten traits and RFM, then only what changes with time (the schedule's).
        var bulk: [Double] = []
        for run in 1...3 {
            clock = .now
            let changed = try await stage.recomputeAll(full: true)
            bulk.append(elapsed(since: clock))
            say(String(format: "3. bulk recompute, all traits, run %d: %.2f s (%d profiles changed)", run, bulk.last!, changed))
        }
        var scheduled: [Double] = []
        for run in 1...3 {
            clock = .now
            let changed = try await stage.recomputeAll(full: false)
            scheduled.append(elapsed(since: clock))
            say(
                String(
                    format: "3. bulk recompute, time-dependent only (%d traits + RFM), run %d: %.2f s (%d profiles changed)",
                    definitions.computedTraits.filter(\.isTimeDependent).count, run, scheduled.last!, changed))
        }

        // 4. The baseline: the same aggregates, read only (every column used, so none is optimized away).
        let compiler = ComputedTraitCompiler(definitions)
        let through = try await client.query("SELECT max(seq) FROM cdp.events").scalar(Int64.self)
        var baseline: [Double] = []
        for _ in 1...3 {
            clock = .now
            _ = try await client.withTransaction { tx in
                try await tx.execute("SET LOCAL jit = off")
                try await tx.execute("SET LOCAL work_mem = '256MB'")
                return try await tx.query(
                    "SELECT count(*) FROM (\(try compiler.aggregateSQL(asOf: Date(), through: through))) AS a WHERE a::text <> ''"
                )
                .scalar(Int.self)
            }
            baseline.append(elapsed(since: clock))
        }
        let bulkMedian = bulk.sorted()[1], baselineMedian = baseline.sorted()[1]
        say(
            String(
                format:
                    "4. baseline (aggregate SELECT):  %.2f s median; bulk recompute median %.2f s = %.2fx the baseline (target <= 10 s)",
                baselineMedian, bulkMedian, bulkMedian / baselineMedian))

        // 5. Rebuild.
        clock = .now
        let rebuilt = try await stage.rebuild()
        say(
            String(
                format: "5. profiles rebuild:            %.1f s (%d profiles changed, %d trait changes: expected 0 and 0)",
                elapsed(since: clock), rebuilt.profilesUpdated, rebuilt.traitChanges))
        let sizes = try await client.query(
            """
            SELECT pg_size_pretty(pg_total_relation_size('cdp.profile_data')), pg_size_pretty(pg_total_relation_size('cdp.profile_trait_values')),
                   pg_size_pretty(pg_total_relation_size('cdp.trait_history')), (SELECT count(*) FROM cdp.trait_history)
            """
        ).first!.decode((String, String, String, Int).self)
        say("sizes: profile_data \(sizes.0), profile_trait_values \(sizes.1), trait_history \(sizes.2) (\(sizes.3) rows)")
        await client.shutdown()
    }
}
