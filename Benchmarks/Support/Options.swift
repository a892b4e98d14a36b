// Options shared by the benchmarks that load the pipeline over HTTP (realtime, pipeline).
import ArgumentParser

/// Where the bench server is, how many clients load it, how often probes go, and how long a drain may take.
public struct LoadOptions: ParsableArguments {
    @Option(help: "Concurrent background HTTP clients.") public var senders = 16
    @Option(help: "Milliseconds between probes.") public var probeInterval = 100
    @Option(help: "Most seconds to wait for the pipeline to drain after a phase.") public var drainTimeout = 900
    @Option(help: "Embedded data directory used when DATABASE_URL/PG* are unset.") public var dataDir = ".tributary/bench-pgdata"

    public init() {}

    public func validate() throws {
        guard senders > 0, probeInterval > 0, drainTimeout > 0 else {
            throw ValidationError("--senders, --probe-interval, --drain-timeout: positive")
        }
    }
}
