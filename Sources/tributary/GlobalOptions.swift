import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryService
import TributarySyncs

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(help: "Log format: text (for people) or json (one object per line, for machines).")
    var logFormat: LogFormat = .text

    @Option(help: "Least severe log level shown: trace, debug, info, notice, warning, error, critical.")
    var logLevel: LogLevel = .notice

    @Option(
        name: .customLong("data-dir"),
        help: "The embedded server's data directory (default: $TRIBUTARY_PGDATA or .tributary/pgdata).")
    var dataDirectory: String?

    enum LogFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

    struct LogLevel: ExpressibleByArgument {
        var level: Logger.Level
        init(_ level: Logger.Level) { self.level = level }
        init?(argument: String) {
            guard let level = Logger.Level(rawValue: argument.lowercased()) else { return nil }
            self.level = level
        }
        static let notice = LogLevel(.notice)
        var defaultValueDescription: String { level.rawValue }
    }

    /// Sets up logging once for the process and returns the command's logger.
    func makeLogger() -> Logger {
        let format: StderrLogHandler.Format = logFormat == .json ? .json : .text
        let level = logLevel.level
        LoggingBootstrap.once {
            LoggingSystem.bootstrap { label in StderrLogHandler(label: label, format: format, level: level) }
        }
        return Logger(label: "tributary")
    }

    /// The database to use: DATABASE_URL / PG* if set, otherwise the embedded server (started if needed).
    func resolveTarget(logger: Logger) async throws -> DatabaseTarget {
        try await DatabaseTarget.resolve(dataDirectory: dataDirectory, logger: logger)
    }

    /// Resolves the database, migrates it, and runs `body` with a client over it (shut down afterwards): what every
    /// command that reads or writes Tributary's tables does first.
    func withMigratedClient<T>(logger: Logger, _ body: (PostgresClient) async throws -> T) async throws -> T {
        let target = try await resolveTarget(logger: logger)
        return try await target.withClient(logger: logger) { client in
            try await Migrator(files: try ProjectFiles.locate(), logger: logger).migrate(client)
            return try await body(client)
        }
    }

    /// The embedded server this invocation would use.
    func embeddedServer(logger: Logger) -> EmbeddedPostgres {
        EmbeddedPostgres(dataDirectory: dataDirectory ?? EmbeddedPostgres.defaultDataDirectory(), logger: logger)
    }
}

/// Bootstraps the logging system at most once per process.
enum LoggingBootstrap {
    nonisolated(unsafe) private static var done = false
    private static let lock = NSLock()
    static func once(_ body: () -> Void) {
        lock.lock()
        defer { lock.unlock() }
        if !done {
            body()
            done = true
        }
    }
}

extension DatabaseTarget {
    /// A client over this target, shut down when `body` ends.
    func withClient<T>(logger: Logger, _ body: (PostgresClient) async throws -> T) async throws -> T {
        let client = PostgresClient(configuration: configuration, options: .init(maxConnections: 4), logger: logger)
        do {
            let value = try await body(client)
            await client.shutdown()
            return value
        } catch {
            await client.shutdown()
            throw error
        }
    }
}

extension String {
    /// Right-aligned in a column `width` characters wide (unchanged when longer), for tables on the terminal.
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
