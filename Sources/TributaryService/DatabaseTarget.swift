import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryModel

/// The database a command works on: the one the environment names, or the embedded default.
public struct DatabaseTarget: Sendable {
    public enum Source: Sendable {
        /// `DATABASE_URL` or libpq's `PG*` variables.
        case environment
        /// Tributary's own server, started if it was not running.
        case embedded(EmbeddedPostgres)
    }

    public let configuration: PostgresConfiguration
    public let source: Source

    /// Resolves the target, starting the embedded server when nothing is configured.
    ///
    /// - Parameter dataDirectory: the embedded cluster's directory; nil means ``EmbeddedPostgres/defaultDataDirectory(environment:)``.
    public static func resolve(
        dataDirectory: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        logger: Logger
    ) async throws -> DatabaseTarget {
        if let configuration = try PostgresConfiguration.fromEnvironment(environment) {
            return DatabaseTarget(configuration: configuration, source: .environment)
        }
        let server = EmbeddedPostgres(
            dataDirectory: dataDirectory ?? EmbeddedPostgres.defaultDataDirectory(environment: environment),
            logger: logger)
        let configuration = try await server.start()
        return DatabaseTarget(configuration: configuration, source: .embedded(server))
    }

    /// One line saying which database this is, without secrets.
    public var summary: String {
        switch source {
        case .environment: "\(configuration) (from the environment)"
        case .embedded(let server):
            "embedded server, data in \((try? server.layout().dataDirectory) ?? server.requestedDataDirectory)"
        }
    }
}
