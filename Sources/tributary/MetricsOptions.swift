import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TributaryServer
import UnixSignals

/// `--metrics-port`: `GET /metrics` (the stages' events processed, batch durations and lag) for the commands that run
/// stream stages without the collection API (`worker`, `identity run`, `profiles run`).
struct MetricsOptions: ParsableArguments {
    @Option(
        help:
            "Serve GET /metrics (the stages' events processed, batch durations, lag) on this port (0: a free one, printed); unset: none."
    )
    var metricsPort: Int?
    @Option(help: "Address for --metrics-port.") var metricsHost = "127.0.0.1"

    /// The endpoint as a service, if asked for; making it bootstraps the process's metrics.
    func service(logger: Logger) -> (any Service)? {
        guard let metricsPort else { return nil }
        let host = metricsHost
        return buildMetricsApplication(host: host, port: metricsPort, logger: logger) { port in
            FileHandle.standardOutput.write(Data("metrics on http://\(host):\(port)/metrics\n".utf8))
        }
    }

    /// Runs `body` until it ends or SIGINT/SIGTERM cancels it, next to the endpoint if asked for.
    func run(logger: Logger, _ body: @escaping @Sendable () async throws -> Void) async throws {
        guard let endpoint = service(logger: logger) else { return try await withTaskCancellationOnSignals(body) }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: endpoint),
                    .init(service: BodyService(body: body), successTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// A closure as a service that stops on graceful shutdown.
private struct BodyService: Service {
    let body: @Sendable () async throws -> Void
    func run() async throws { try await cancelWhenGracefulShutdown { try await body() } }
}
