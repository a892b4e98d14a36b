import Foundation
import Logging
import Postgres
import ServiceLifecycle
import TributaryCollection
import TributaryGovernance
import TributaryModel
import TributaryIdentity
import TributaryPredictions
import TributaryProfiles
import TributarySegments
import TributarySyncs
import TributaryRuntime

/// The stream stages and background jobs of one Tributary process, assembled in one place for `tributary serve`,
/// `tributary worker`, `tributary demo`, the benchmarks and the tests.
///
/// Each job gets a connection pool of its own role (`application_name` such as `tributary serve: identity`, the
/// role's timeouts; see ``TributaryRuntime``'s connection roles), so `pg_stat_activity` tells the jobs apart.
/// ``services`` are swift-service-lifecycle services: run them in a `ServiceGroup` (they stop on graceful shutdown),
/// or each in a task (they stop when cancelled); then call ``shutdown()`` to close the pools.
///
/// ```swift
/// let pipeline = Pipeline(
///     configuration: target.configuration, process: "serve", options: .init(identity: true, profiles: true),
///     destinations: .standard(), logger: logger)
/// let group = ServiceGroup(services: pipeline.services, gracefulShutdownSignals: [.sigterm], logger: logger)
/// try await group.run()
/// await pipeline.shutdown()
/// ```
public struct Pipeline: Sendable {
    /// Which jobs the process runs.
    public struct Options: Sendable {
        /// The real-time identity stage (follows collection).
        public var identity: Bool
        /// The profile stage (follows identity), with real-time segments following it.
        public var profiles: Bool
        /// Time between bulk recomputes of the computed traits that change with time alone (windows, RFM).
        public var recomputeEvery: Duration
        /// Time between refreshes of every segment's members; nil: none.
        public var refreshSegmentsEvery: Duration?
        /// Time between looks for due scheduled syncs; nil: this process runs no scheduled syncs.
        public var syncPollInterval: Duration?
        /// Real-time activation: real-time syncs follow their segments' entries and exits.
        public var realtime: Bool
        /// Event retention, applied at most once a day across all processes.
        public var retention: Bool
        /// Scheduled predictions: once the models were fitted (`tributary predictions fit`, `predictions propensity`),
        /// they score again daily and are fitted again weekly, across all processes.
        public var predictions: Bool

        public init(
            identity: Bool = false, profiles: Bool = false, recomputeEvery: Duration = .seconds(3600),
            refreshSegmentsEvery: Duration? = nil, syncPollInterval: Duration? = nil, realtime: Bool = false,
            retention: Bool = false, predictions: Bool = false
        ) {
            self.identity = identity
            self.profiles = profiles
            self.recomputeEvery = recomputeEvery
            self.refreshSegmentsEvery = refreshSegmentsEvery
            self.syncPollInterval = syncPollInterval
            self.realtime = realtime
            self.retention = retention
            self.predictions = predictions
        }
    }

    /// The jobs, in the order of the flow.
    public let services: [any Service]
    /// The pools the jobs use, closed by ``shutdown()``.
    let pools: [PostgresClient]
    /// With the identity stage in this process: its guesses of incoming events' profiles, for the collection API's
    /// writer (``ServerConfiguration/profileHints``), so the events it guesses right are stored stamped.
    public let profileHints: (any ProfileHints)?

    /// - Parameters:
    ///   - configuration: the database (the role settings are added per job).
    ///   - process: the process's name in `application_name` (`serve`, `worker`, `demo`).
    ///   - destinations: what syncs may deliver to (`DestinationRegistry.standard()` from TributaryDestinations in the
    ///     command line; `.core()` has no HTTP destinations).
    ///   - environment: where syncs read `env:NAME` secrets.
    public init(
        configuration: PostgresConfiguration, process: String, options: Options, destinations: DestinationRegistry,
        environment: [String: String] = ProcessInfo.processInfo.environment, logger: Logger
    ) {
        var services: [any Service] = []
        var pools: [PostgresClient] = []
        var hints: (any ProfileHints)?
        func pool(_ role: String, connections: Int) -> PostgresClient {
            let client = PostgresClient(
                configuration: configuration.forStage(role, process: process), options: .init(maxConnections: connections),
                logger: logger)
            pools.append(client)
            return client
        }
        if options.identity {
            // The batch and the next batch's prefetch.
            let stage = IdentityStage(client: pool("identity", connections: 2), logger: logger)
            hints = stage.profileHints
            services.append(IdentityService(stage: stage))
        }
        if options.profiles {
            let stage = Self.profileStage(client: pool("profiles", connections: 2), logger: logger)
            services.append(ProfileService(stage: stage, recomputeEvery: options.recomputeEvery))
        }
        if let every = options.refreshSegmentsEvery {
            let membership = SegmentMembership(client: pool("segments", connections: 1), logger: logger)
            services.append(SegmentService(membership: membership, every: every))
        }
        if options.syncPollInterval != nil || options.realtime || options.retention {
            let client = pool("syncs", connections: 4)
            let runner = SyncRunner(client: client, logger: logger, registry: destinations, environment: environment)
            if let interval = options.syncPollInterval {
                let worker = SyncWorker(client: client, logger: logger, runner: runner, registry: destinations)
                services.append(SyncWorkerService(worker: worker, pollInterval: interval))
            }
            if options.realtime {
                services.append(RealtimeService(activation: RealtimeActivation(client: client, logger: logger, runner: runner)))
            }
            if options.retention { services.append(DueJobService.retention(client: client, logger: logger)) }
        }
        if options.predictions {
            let client = pool("predictions", connections: 1)
            services.append(
                DueJobService.predictions(
                    PredictiveTraits(client: client, logger: logger),
                    CustomerBasePredictions(client: client, logger: logger), PropensityScores(client: client, logger: logger),
                    client: client, logger: logger))
        }
        self.services = services
        self.pools = pools
        self.profileHints = hints
    }

    /// Closes the jobs' pools; call once the services have stopped.
    public func shutdown() async {
        for pool in pools { await pool.shutdown() }
    }

    /// The profile stage as Tributary runs it: real-time segments follow each batch in its transaction. The one place
    /// that decides what follows the profile stage.
    public static func profileStage(
        client: PostgresClient, logger: Logger, batchSize: Int = 5000,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) -> ProfileStage {
        ProfileStage(client: client, logger: logger, batchSize: batchSize, followers: [RealtimeSegments()], clock: clock)
    }
}

/// The real-time identity stage as a service: stops on graceful shutdown.
struct IdentityService: Service {
    let stage: IdentityStage
    func run() async throws {
        try await cancelWhenGracefulShutdown { try await stage.run() }
    }
}

/// The profile stage as a service: stops on graceful shutdown.
struct ProfileService: Service {
    let stage: ProfileStage
    let recomputeEvery: Duration
    func run() async throws {
        try await cancelWhenGracefulShutdown { try await stage.run(recomputeInterval: recomputeEvery) }
    }
}

/// Scheduled refreshes of every segment's members: stops on graceful shutdown.
struct SegmentService: Service {
    let membership: SegmentMembership
    let every: Duration
    func run() async throws {
        await cancelWhenGracefulShutdown { await membership.run(every: every) }
    }
}

/// The scheduled-sync worker as a service: stops on graceful shutdown (the batch in flight is abandoned unconfirmed).
struct SyncWorkerService: Service {
    let worker: SyncWorker
    let pollInterval: Duration
    func run() async throws {
        await cancelWhenGracefulShutdown { await worker.run(pollInterval: pollInterval) }
    }
}

/// Real-time activation as a service: stops on graceful shutdown.
struct RealtimeService: Service {
    let activation: RealtimeActivation
    func run() async throws {
        await cancelWhenGracefulShutdown { await activation.run() }
    }
}

/// A job that looks every ten minutes whether something is due (it decides, across all processes, whether to act):
/// event retention, scheduled predictions. Stops on graceful shutdown; an error is logged and the job looks again later.
struct DueJobService: Service {
    let name: String
    let logger: Logger
    let look: @Sendable () async throws -> Void
    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await look()
                } catch is CancellationError {
                    return
                } catch {
                    logger.error("\(name): \(error)")
                }
                try? await Task.sleep(for: .seconds(600))
            }
        }
    }

    /// Event retention: applies the policy in force (`tributary retention set`) at most once a day.
    static func retention(client: PostgresClient, logger: Logger) -> DueJobService {
        DueJobService(name: "retention", logger: logger) { try await Retention.runIfDue(client: client, logger: logger) }
    }

    /// Scheduled predictions: the models the computed traits file's predictive traits need are fitted or trained when
    /// missing (a refused one again a day later) and their recommendations computed daily; once fitted, every buyer
    /// is scored again daily and the models fitted again weekly. After new scores, the segments that read them
    /// refresh their members (``PredictionHandOff``).
    static func predictions(
        _ traits: PredictiveTraits, _ predictions: CustomerBasePredictions, _ propensities: PropensityScores,
        client: PostgresClient, logger: Logger
    )
        -> DueJobService
    {
        DueJobService(name: "predictions", logger: logger) {
            var scored = !(try await traits.runIfDue()).isEmpty
            for (name, action) in try await propensities.runIfDue().sorted(by: { $0.key < $1.key }) {
                logger.info("predictions: propensity \(action)", metadata: ["name": "\(name)"])
                scored = true
            }
            switch try await predictions.runIfDue() {
            case .nothing: break
            case .rescored(let rows):
                logger.info("predictions: scored every buyer again", metadata: ["rows": "\(rows)"])
                scored = true
            case .refitted(let fit, let rows):
                logger.info("predictions: fitted again and scored", metadata: ["fit": "\(fit)", "rows": "\(rows)"])
                scored = true
            }
            if scored { try await PredictionHandOff.refreshSegments(client: client, logger: logger) }
        }
    }
}
