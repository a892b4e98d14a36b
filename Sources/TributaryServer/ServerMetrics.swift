import CoreMetrics
import Metrics
import Prometheus

/// The HTTP APIs' metrics, recorded through swift-metrics into this instance's Prometheus registry (served at
/// `GET /metrics`). Every metric is made by ``factory``, so two applications in one process (tests) keep their counts
/// apart; with ``bootstrap()`` the registry also receives whatever else the process records through swift-metrics
/// (the stream stages' ``TributaryRuntime/StageMetrics``).
///
/// | metric | type | labels |
/// |---|---|---|
/// | `tributary_collect_request_duration_seconds` | histogram | |
/// | `tributary_profile_request_duration_seconds` | histogram | |
/// | `tributary_http_requests_total` | counter | `route`, `status` |
/// | `tributary_events_accepted_total`, `tributary_events_duplicate_total` | counter | |
/// | `tributary_events_rejected_total` | counter | `reason` |
/// | `tributary_writer_queue_depth` | gauge | |
/// | `tributary_writer_flush_events` | histogram (events per group commit) | |
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    /// The swift-metrics factory over ``registry``.
    public let factory: PrometheusMetricsFactory
    let batchDuration: CoreMetrics.Timer
    let profileDuration: CoreMetrics.Timer
    let accepted: CoreMetrics.Counter
    let duplicates: CoreMetrics.Counter
    let queueDepth: CoreMetrics.Gauge
    let flushSize: CoreMetrics.Recorder

    public init() {
        let latencyBuckets: [Duration] = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            "tributary_collect_request_duration_seconds": latencyBuckets,
            "tributary_profile_request_duration_seconds": latencyBuckets,
        ]
        factory.valueHistogramBuckets = ["tributary_writer_flush_events": [1, 10, 100, 500, 1000, 2500, 5000, 10000]]
        self.factory = factory
        batchDuration = CoreMetrics.Timer(label: "tributary_collect_request_duration_seconds", factory: factory)
        profileDuration = CoreMetrics.Timer(label: "tributary_profile_request_duration_seconds", factory: factory)
        accepted = CoreMetrics.Counter(label: "tributary_events_accepted_total", factory: factory)
        duplicates = CoreMetrics.Counter(label: "tributary_events_duplicate_total", factory: factory)
        queueDepth = CoreMetrics.Gauge(label: "tributary_writer_queue_depth", factory: factory)
        flushSize = CoreMetrics.Recorder(label: "tributary_writer_flush_events", aggregate: true, factory: factory)
    }

    /// Counts a request answered with `status` on `route`.
    func request(route: String, status: Int) {
        CoreMetrics.Counter(
            label: "tributary_http_requests_total", dimensions: [("route", route), ("status", String(status))], factory: factory
        )
        .increment()
    }

    /// Counts `count` events refused for `reason`.
    func rejected(_ reason: String, count: Int = 1) {
        CoreMetrics.Counter(label: "tributary_events_rejected_total", dimensions: [("reason", reason)], factory: factory)
            .increment(by: Int64(count))
    }

    /// Makes this registry the process's swift-metrics backend. At most once per process (swift-metrics' rule).
    public func bootstrap() { MetricsSystem.bootstrap(factory) }
}
