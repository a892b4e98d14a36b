import Prometheus

/// The collection and profile APIs' Prometheus metrics, served at `GET /metrics`; with ``bootstrap()``, also whatever the
/// process records through swift-metrics (the stream stages' ``TributaryRuntime/StageMetrics``).
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let batchDuration: DurationHistogram
    let profileDuration: DurationHistogram
    let accepted: Counter
    let duplicates: Counter
    let queueDepth: Gauge
    let flushSize: ValueHistogram

    public init() {
        let latencyBuckets: [Duration] = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        batchDuration = registry.makeDurationHistogram(
            name: "tributary_collect_request_duration_seconds", buckets: latencyBuckets,
            help: "Time from a collection request's arrival to its response (including the durable commit)")
        profileDuration = registry.makeDurationHistogram(
            name: "tributary_profile_request_duration_seconds", buckets: latencyBuckets,
            help: "Time from a profile API request's arrival to its response")
        accepted = registry.makeCounter(name: "tributary_events_accepted_total", help: "Events stored")
        duplicates = registry.makeCounter(
            name: "tributary_events_duplicate_total", help: "Events not stored again because their messageId was already stored")
        queueDepth = registry.makeGauge(name: "tributary_writer_queue_depth", help: "Events waiting for the writer")
        flushSize = registry.makeValueHistogram(
            name: "tributary_writer_flush_events", buckets: [1, 10, 100, 500, 1000, 2500, 5000, 10000],
            help: "Events per group commit")
    }

    func request(route: String, status: Int) {
        registry.makeCounter(
            name: "tributary_http_requests_total", labels: [("route", route), ("status", String(status))],
            help: "HTTP requests by route and status"
        ).increment()
    }

    func rejected(_ reason: String, count: Int = 1) {
        registry.makeCounter(
            name: "tributary_events_rejected_total", labels: [("reason", reason)], help: "Events refused, by reason"
        ).increment(by: Int64(count))
    }
}
