import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import Prometheus

/// The Prometheus text of `registry`, as `GET /metrics` answers it.
func metricsResponse(_ registry: PrometheusCollectorRegistry) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
}

/// `GET /metrics` alone, for a process that runs stream stages without the collection API (`tributary worker`,
/// `tributary identity run`, `tributary profiles run`): bootstraps swift-metrics with a Prometheus registry of its
/// own (once per process) and serves it on `host`:`port`.
public func buildMetricsApplication(
    host: String, port: Int, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    let router = Router(context: BasicRequestContext.self)
    router.get("/metrics") { _, _ in metricsResponse(registry) }
    return Application(
        router: router, configuration: .init(address: .hostname(host, port: port), serverName: "tributary"),
        onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) }, logger: logger)
}
