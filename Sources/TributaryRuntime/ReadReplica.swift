import Foundation
import Metrics
import Postgres
import Synchronization

/// A PostgreSQL streaming replica that serves reads the primary need not (the profile API's lookups), with a bound
/// on how stale they may be and the primary as the fallback.
///
/// ``run(every:)`` measures the replica's replay lag every interval: zero when it has replayed everything it
/// received, else the time since the last transaction it replayed was committed on the primary. A read goes to the
/// replica while it answers and its lag is at most ``maxLag``; otherwise, and whenever the replica fails a read for
/// want of a connection, the read goes to the primary. So a reader sees data at most ``maxLag`` (plus one
/// measuring interval) old, and never an error because the replica is down.
///
/// Metrics (swift-metrics): `tributary_read_replica_lag_seconds` (the last measured lag), `tributary_read_replica_up`
/// (1 while the replica answers and is within the bound), `tributary_read_replica_fallbacks_total` (reads sent to
/// the primary because the replica was down or behind).
///
/// ```swift
/// let replica = ReadReplica(client: replicaClient, maxLag: .seconds(10))
/// let rows = try await replica.read(primary: client) { try await $0.query("SELECT …") }
/// ```
public final class ReadReplica: Sendable {
    public let client: PostgresClient
    public let maxLag: Duration
    private let state = Mutex(State())
    private let lagGauge: Gauge
    private let upGauge: Gauge
    private let fallbacks: Counter

    struct State {
        /// Whether the replica answered the last measurement (unknown before the first: tried).
        var up = true
        var lag: Double = 0
    }

    public init(client: PostgresClient, maxLag: Duration, factory: any MetricsFactory = MetricsSystem.factory) {
        self.client = client
        self.maxLag = maxLag
        lagGauge = Gauge(label: "tributary_read_replica_lag_seconds", factory: factory)
        upGauge = Gauge(label: "tributary_read_replica_up", factory: factory)
        fallbacks = Counter(label: "tributary_read_replica_fallbacks_total", factory: factory)
    }

    /// Whether reads go to the replica now.
    public var usable: Bool {
        let now = state.withLock { $0 }
        return now.up && now.lag <= Double(maxLag.components.seconds) + Double(maxLag.components.attoseconds) / 1e18
    }

    /// The last measured replay lag, in seconds.
    public var lag: Double { state.withLock { $0.lag } }

    /// Measures the replica once: whether it answers, and its replay lag.
    public func measure() async {
        do {
            let lag = try await client.query(
                """
                SELECT CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8
                """
            ).scalar(Double.self)
            state.withLock { $0 = State(up: true, lag: lag) }
            lagGauge.record(lag)
        } catch {
            state.withLock { $0.up = false }
        }
        upGauge.record(usable ? 1 : 0)
    }

    /// Measures every `interval` until the task is cancelled.
    public func run(every interval: Duration = .seconds(1)) async {
        while !Task.isCancelled {
            await measure()
            try? await Task.sleep(for: interval)
        }
    }

    /// Runs `body` on `replica` as ``read(primary:_:)`` does, or on `primary` when there is no replica.
    public static func read<T: Sendable>(
        _ replica: ReadReplica?, primary: PostgresClient, _ body: @Sendable (PostgresClient) async throws -> T
    ) async throws -> T {
        if let replica { return try await replica.read(primary: primary, body) }
        return try await body(primary)
    }

    /// Runs `body` on the replica when it is usable, else (or when the replica fails it for want of a connection)
    /// on `primary`.
    public func read<T: Sendable>(
        primary: PostgresClient, _ body: @Sendable (PostgresClient) async throws -> T
    ) async throws -> T {
        if usable {
            do {
                return try await body(client)
            } catch let error as PostgresError where [.connection, .poolTimeout, .poolClosed].contains(error.kind) {
                state.withLock { $0.up = false }
                upGauge.record(0)
            }
        }
        fallbacks.increment()
        return try await body(primary)
    }
}
