import Postgres

/// The session settings of Tributary's own connections, by what they are for.
///
/// Each long-running process opens one pool per role, so `pg_stat_activity` names what every connection does
/// (`tributary serve: identity`), and a stuck statement or lock wait fails the batch (which is retried) instead of
/// hanging a stage forever. JIT is off on every one of them (``PostgresConfiguration/defaultSessionSettings``).
///
/// ```swift
/// let identity = PostgresClient(configuration: target.configuration.forStage("identity", process: "serve"), …)
/// // application_name 'tributary serve: identity'; jit off; lock_timeout 1min
/// ```
extension PostgresConfiguration {
    /// Settings of a stream stage's connections (identity, profiles, segments, syncs, real-time activation): a
    /// statement waiting more than a minute for a lock fails its batch (which is retried) rather than hanging the
    /// stage, and a transaction left idle by a stalled process is ended after 10 minutes, releasing its locks. No
    /// statement timeout: a stage's rebuild after an identity rebuild, or a large sync's diff, legitimately runs long.
    /// Over TCP, the server probes an idle connection after 2 s and drops it after two unanswered probes a second
    /// apart, so a stage's locks held by a machine that crashed (no FIN, no RST) are released within about 4 s.
    public static let stageSessionSettings: [SessionSetting] =
        [
            SessionSetting("lock_timeout", "1min"),
            SessionSetting("idle_in_transaction_session_timeout", "10min"),
        ] + keepaliveSettings

    /// Server-side TCP keepalives of a session (ignored over a Unix socket): a peer that vanished is noticed in ~4 s.
    public static let keepaliveSettings: [SessionSetting] = [
        SessionSetting("tcp_keepalives_idle", "2"),
        SessionSetting("tcp_keepalives_interval", "1"),
        SessionSetting("tcp_keepalives_count", "2"),
    ]

    /// Settings of the event writer's connections: a group commit normally takes milliseconds; one waiting longer
    /// than a minute for a lock (a deletion in progress holds the sequence lock) fails its requests with an error the
    /// SDKs retry, rather than holding them open indefinitely.
    public static let writerSessionSettings: [SessionSetting] =
        [
            SessionSetting("statement_timeout", "2min"),
            SessionSetting("lock_timeout", "1min"),
            SessionSetting("idle_in_transaction_session_timeout", "2min"),
        ] + keepaliveSettings

    /// The configuration of the connections of stage `stage` in process `process` (`serve`, `worker`).
    public func forStage(_ stage: String, process: String) -> PostgresConfiguration {
        forRole("tributary \(process): \(stage)", settings: Self.stageSessionSettings)
    }

    /// The configuration of reads from a streaming replica (``ReadReplica``) in process `process`: a lookup that
    /// takes more than 30 seconds fails rather than holding a connection.
    public func forReplicaReads(process: String) -> PostgresConfiguration {
        forRole("tributary \(process): replica reads", settings: [SessionSetting("statement_timeout", "30s")])
    }

    /// The configuration of the collection API's connections (event writer and API reads) in process `process`.
    public func forCollection(process: String) -> PostgresConfiguration {
        forRole("tributary \(process): api", settings: Self.writerSessionSettings)
    }
}
