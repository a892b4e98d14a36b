// Shared by the benchmarks that run Tributary as shipped: `tributary` processes (the binary next to the benchmark's),
// their peak memory, and `psql \copy`, the yardstick.
import Foundation
import Postgres
import TributaryService

/// A `tributary` subcommand running as a process of its own, against one database, logging to a file.
public struct TributaryProcess: Sendable {
    public let pid: pid_t
    /// Its standard output and error.
    public let log: String

    /// Starts `tributary ARGUMENTS` (the binary next to this executable) with `DATABASE_URL` set to `database`;
    /// `TRIBUTARY_BENCH_LOG_LEVEL` (debug shows the stages' and the writer's per-step timings) becomes `--log-level`.
    public static func start(
        _ arguments: [String], database: PostgresConfiguration, files: ProjectFiles, logName: String
    ) throws -> TributaryProcess {
        var arguments = arguments
        if let level = ProcessInfo.processInfo.environment["TRIBUTARY_BENCH_LOG_LEVEL"] { arguments += ["--log-level", level] }
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
            "tributary"
        ).path
        let log = FileManager.default.temporaryDirectory.appendingPathComponent(logName).path
        try? FileManager.default.removeItem(atPath: log)
        var environment = ProcessInfo.processInfo.environment
        environment["DATABASE_URL"] = database.resolvedConnectionString
        environment["TRIBUTARY_SQL_DIR"] = files.root.path
        return TributaryProcess(pid: try ProcessRunner.start(binary, arguments, environment: environment, logFile: log), log: log)
    }

    /// Starts `tributary serve --port 0 EXTRA` and waits (up to 30 s) for the port it listens on.
    public static func serve(
        _ extra: [String] = [], database: PostgresConfiguration, files: ProjectFiles, logName: String
    ) async throws -> (TributaryProcess, port: Int) {
        let process = try start(["serve", "--port", "0"] + extra, database: database, files: files, logName: logName)
        for _ in 0..<600 {
            if let text = try? String(contentsOfFile: process.log, encoding: .utf8),
                let range = text.range(of: "collecting on http://127.0.0.1:")
            {
                if let port = Int(text[range.upperBound...].prefix { $0.isNumber }), port > 0 { return (process, port) }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        process.stop()
        throw BenchmarkError("tributary serve did not start; see \(process.log)")
    }

    /// SIGTERM, then waits for the process to exit.
    public func stop() {
        kill(pid, SIGTERM)
        ProcessRunner.wait(pid)
    }

    /// The process's peak resident set (VmHWM), in KiB; 0 once it has exited.
    public var peakRSS: Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
}

/// A benchmark that cannot go on, with why.
public struct BenchmarkError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// `psql -c COMMAND` against `database` (the server's own psql, as a user would run it); returns the seconds it took
/// and what it printed.
@discardableResult
public func psql(_ command: String, database: PostgresConfiguration) throws -> (seconds: Double, output: String) {
    let binary = try EmbeddedPostgres.findBinaries() + "/psql"
    let started = ContinuousClock.now
    let output = try ProcessRunner.run(
        binary, ["-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", database.resolvedConnectionString, "-c", command],
        separateErrors: true)
    let seconds = elapsed(since: started)
    guard output.status == 0 else { throw BenchmarkError("psql failed: \(output.errorText) \(output.tail)") }
    return (seconds, output.text.trimmingCharacters(in: .whitespacesAndNewlines))
}
