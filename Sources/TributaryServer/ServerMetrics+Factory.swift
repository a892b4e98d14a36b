import Metrics
import Prometheus

// Apart from ServerMetrics.swift: swift-metrics' Counter and Gauge would shadow Prometheus' there.
extension ServerMetrics {
    /// A swift-metrics factory over this registry: bootstrapped by the process (``bootstrap()``), or bound to a task with
    /// `withMetricsFactory` (tests), so what it records is served at `/metrics`.
    public var factory: any MetricsFactory { PrometheusMetricsFactory(registry: registry) }

    /// Makes this registry the process's swift-metrics backend. At most once per process (swift-metrics' rule).
    public func bootstrap() { MetricsSystem.bootstrap(factory) }
}
