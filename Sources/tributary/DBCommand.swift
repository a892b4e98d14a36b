import ArgumentParser
import Foundation
import Postgres
import TributaryIdentity
import TributaryProfiles
import TributarySyncs

extension TributaryCommand {
    struct DB: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "db",
            abstract: "Manage the embedded PostgreSQL server (used when DATABASE_URL and PG* are unset).",
            subcommands: [Start.self, Stop.self, Status.self, URL.self]
        )
    }
}

extension TributaryCommand.DB {
    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the embedded cluster if needed and start it; prints its URL.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let logger = global.makeLogger()
            let server = global.embeddedServer(logger: logger)
            try await server.start()
            print(try server.url())
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the embedded server.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let server = global.embeddedServer(logger: global.makeLogger())
            print(try await server.stop() ? "stopped" : "not running")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show whether the embedded server is running.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let server = global.embeddedServer(logger: global.makeLogger())
            let status = try await server.status()
            print("state:      \(status.running ? "running" : status.initialized ? "stopped" : "not created")")
            if let pid = status.pid { print("pid:        \(pid)") }
            if let version = status.version { print("version:    PostgreSQL \(version)") }
            print("data:       \(status.layout.dataDirectory)")
            print("socket:     \(status.layout.socketDirectory)")
            print("log:        \(status.layout.logFile)")
            if status.running { print("url:        \(try server.url())") }
            if PostgresConfiguration.environmentKeys.contains(where: { !(ProcessInfo.processInfo.environment[$0] ?? "").isEmpty })
            {
                print("note:       DATABASE_URL or PG* is set, so other commands use that database, not this one")
            }
        }
    }

    struct URL: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "url", abstract: "Print the embedded server's connection URL (for psql and other tools).")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let server = global.embeddedServer(logger: global.makeLogger())
            guard try await server.status().running else {
                throw CLIError("the embedded server is not running; start it with `tributary db start`")
            }
            print(try server.url())
        }
    }
}
