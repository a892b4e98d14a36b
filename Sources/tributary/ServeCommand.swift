import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Postgres
import ServiceLifecycle
import TributaryCollection
import TributaryDestinations
import TributaryModel
import TributaryServer
import TributaryService
import TributarySyncs
import UnixSignals
import TributaryRuntime

extension TributaryCommand {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the Segment-compatible collection API (POST /v1/track, /v1/batch, …), the profile API "
                + "(GET /v1/profiles/KIND/VALUE), GET /health and GET /metrics.",
            discussion: """
                Also runs the real-time identity stage (unless --no-identity), which stamps new events with profiles, and the \
                profile stage after it (unless --no-profiles), which merges traits and keeps computed traits current.
                """)
        @OptionGroup var global: GlobalOptions

        @Option(help: "Address to listen on.") var host = "127.0.0.1"
        @Option(help: "Port to listen on.") var port = 8080
        @Option(help: "Events waiting to be stored before requests get 503 with Retry-After.") var maxQueuedEvents = 50_000
        @Flag(inversion: .prefixedNo, help: "Run the real-time identity stage in this process.") var identity = true
        @Flag(inversion: .prefixedNo, help: "Run the profile stage (traits, computed traits) in this process.") var profiles =
            true
        @Flag(
            inversion: .prefixedNo,
            help:
                "Store new events with the profile the identity stage's memory predicts (with --identity); --no-guess-profiles stores them unstamped until the stage passes them."
        ) var guessProfiles = true
        @Flag(help: "Serve the web console under /console (sign in with an API token).") var console = false
        @Option(help: "Seconds between bulk recomputes of computed traits (time windows, RFM).") var recomputeEvery = 3600
        @Option(
            help: """
                A streaming replica for the profile API's reads (libpq URL or key=value string; default \
                $DATABASE_READ_URL). Reads go to the primary while the replica is down or more than --read-max-lag behind.
                """)
        var readURL: String?
        @Option(help: "Seconds the replica may be behind the primary before profile reads go to the primary.")
        var readMaxLag = 10
        @Option(
            help:
                "Seconds between refreshes of every segment's members (0: never; real-time segments also follow each profile change)."
        )
        var refreshSegmentsEvery = 900

        func run() async throws {
            let logger = global.makeLogger()
            let target = try await global.resolveTarget(logger: logger)
            // One pool per role, so pg_stat_activity names each connection's job and each gets its role's timeouts.
            let configuration = target.configuration
            let client = PostgresClient(
                configuration: configuration.forCollection(process: "serve"), options: .init(maxConnections: 8), logger: logger)
            try await Migrator(files: try ProjectFiles.locate(), logger: logger).migrate(client)
            let summary = target.summary
            // The stages' swift-metrics land in the registry served at /metrics.
            let metrics = ServerMetrics()
            metrics.bootstrap()
            let readURL = readURL ?? ProcessInfo.processInfo.environment["DATABASE_READ_URL"].flatMap { $0.isEmpty ? nil : $0 }
            guard readMaxLag >= 0 else { throw CLIError("--read-max-lag must be 0 or more seconds, got \(readMaxLag)") }
            let replica = try readURL.map { url in
                let configuration: PostgresConfiguration
                do { configuration = try PostgresConfiguration(connectionString: url) } catch {
                    throw CLIError("--read-url / DATABASE_READ_URL is not a PostgreSQL connection string: \(error)")
                }
                return ReadReplica(
                    client: PostgresClient(
                        configuration: configuration.forReplicaReads(process: "serve"), options: .init(maxConnections: 4),
                        logger: logger),
                    maxLag: .seconds(readMaxLag))
            }
            let pipeline = Pipeline(
                configuration: configuration, process: "serve",
                options: .init(
                    identity: identity, profiles: profiles, recomputeEvery: .seconds(recomputeEvery),
                    refreshSegmentsEvery: refreshSegmentsEvery > 0 ? .seconds(refreshSegmentsEvery) : nil),
                destinations: DestinationRegistry.standard(), logger: logger)
            let app = buildApplication(
                configuration: ServerConfiguration(
                    host: host, port: port, maxQueuedEvents: maxQueuedEvents, destinations: DestinationRegistry.standard(),
                    profileHints: guessProfiles ? pipeline.profileHints : nil, console: console, readReplica: replica),
                client: client, metrics: metrics, logger: logger,
                onListening: { port in
                    // Written straight to the file descriptor, so a supervisor reading a pipe sees it at once.
                    var line = "tributary \(Tributary.version) collecting on http://\(host):\(port) into \(summary)\n"
                    if console { line += "console: http://\(host):\(port)/console\n" }
                    FileHandle.standardOutput.write(Data(line.utf8))
                })
            var services: [ServiceGroupConfiguration.ServiceConfiguration] =
                [.init(service: app)] + pipeline.services.map { .init(service: $0) }
            if let replica { services.append(.init(service: ReplicaLagService(replica: replica))) }
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
            await pipeline.shutdown()
            await replica?.client.shutdown()
            await client.shutdown()
        }
    }

    /// Measures the read replica's lag every second (``ReadReplica/run(every:)``); stops on graceful shutdown.
    struct ReplicaLagService: Service {
        let replica: ReadReplica
        func run() async throws {
            await cancelWhenGracefulShutdown { await replica.run(every: .seconds(1)) }
        }
    }

    struct Sources: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage sources and their write keys (stored only as SHA-256).",
            subcommands: [Create.self, List.self, Disable.self, Enable.self, RotateKey.self])
    }
}

extension TributaryCommand.Sources {
    /// Runs `body` with a source store on the resolved database (migrated first); then records the action `audit`
    /// on source `name` in the audit log, if given.
    static func withStore<T>(
        _ global: GlobalOptions, audit: (action: String, name: String)? = nil, _ body: (SourceStore) async throws -> T
    ) async throws -> T {
        let logger = global.makeLogger()
        return try await global.withMigratedClient(logger: logger) { client in
            let result: T
            do {
                result = try await body(SourceStore(client: client))
            } catch let error as SourceError {
                throw CLIError(error.description)
            }
            if let audit { try await recordAudit(client, audit.action, target: audit.name) }
            return result
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a source; prints its write key on the last line.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The source's name, for example 'web' or 'pos-store-12'.") var name: String
        func run() async throws {
            let (source, key) = try await TributaryCommand.Sources.withStore(global, audit: ("sources.create", name)) {
                try await $0.create(name: name)
            }
            print("created source '\(source.name)' (\(source.id)); its write key is shown once, on the next line:")
            print(key)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List sources.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let sources = try await TributaryCommand.Sources.withStore(global) { try await $0.list() }
            if sources.isEmpty { print("no sources; create one with `tributary sources create NAME`") }
            for source in sources {
                let state = source.enabled ? "enabled " : "disabled"
                print(
                    "\(state)  \(source.name)  \(source.id)  key \(source.writeKeyHint)  created \(source.createdAt.formatted(.iso8601))"
                )
            }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a source: its write key gets 401; its events stay.")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        func run() async throws {
            let source = try await TributaryCommand.Sources.withStore(global, audit: ("sources.disable", name)) {
                try await $0.disable(name: name)
            }
            print("disabled source '\(source.name)'")
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a disabled source again.")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        func run() async throws {
            let source = try await TributaryCommand.Sources.withStore(global, audit: ("sources.enable", name)) {
                try await $0.enable(name: name)
            }
            print("enabled source '\(source.name)'")
        }
    }

    struct RotateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-key",
            abstract: "Replace a source's write key (the old one stops working); prints it on the last line.")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        func run() async throws {
            let (source, key) = try await TributaryCommand.Sources.withStore(global, audit: ("sources.rotate_key", name)) {
                try await $0.rotateKey(name: name)
            }
            print("new write key for '\(source.name)', shown once, on the next line:")
            print(key)
        }
    }
}
