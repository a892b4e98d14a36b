import AsyncHTTPClient
import Foundation
import NIOCore
import Postgres
import PostgresTesting
import Testing

/// `--metrics-port` of the commands that run a stage without the collection API: GET /metrics through a real socket.
@Suite struct MetricsCLITests {
    let cli = CLITests()

    @Test func identityRunServesItsStageMetrics() async throws {
        try await cli.withDatabaseURL { url in
            let env = ["DATABASE_URL": url]
            #expect(try await cli.run(["migrate"], environment: env).status == 0)
            #expect(try await cli.run(["sources", "create", "crm"], environment: env).status == 0)
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("metrics-cli-\(UUID())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let jsonl = directory.appendingPathComponent("events.jsonl")
            try (0..<3).map {
                #"{"type":"track","userId":"u-\#($0)","event":"Viewed","messageId":"m\#($0)","timestamp":"2026-11-01T10:00:00Z"}"#
            }
            .joined(separator: "\n").write(to: jsonl, atomically: true, encoding: .utf8)
            #expect(try await cli.run(["import", jsonl.path, "--source", "crm"], environment: env).status == 0)

            var environment = ProcessInfo.processInfo.environment
            for key in PostgresConfiguration.environmentKeys { environment.removeValue(forKey: key) }
            environment.merge(env) { $1 }
            let log = directory.appendingPathComponent("identity.log").path
            let stage = try ProcessRunner.start(
                CLITests.executable.path, ["identity", "run", "--metrics-port", "0"], environment: environment, logFile: log)
            var text = ""
            for _ in 0..<300
            where
                !(text.contains(#"tributary_stage_events_total{stage="identity"} 3"#)
                && text.contains(#"tributary_stage_lag_events{stage="identity"} 0"#))
            {
                try await Task.sleep(for: .milliseconds(100))
                let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                guard let range = output.range(of: "metrics on http://") else { continue }
                let address = output[range.upperBound...].prefix { !$0.isWhitespace }
                let response = try await HTTPClient.shared.execute(
                    HTTPClientRequest(url: "http://\(address)"), timeout: .seconds(60))
                text = String(buffer: try await response.body.collect(upTo: 1 << 20))
            }
            #expect(text.contains(#"tributary_stage_events_total{stage="identity"} 3"#), "\(text)")
            #expect(text.contains(#"tributary_stage_lag_events{stage="identity"} 0"#), "\(text)")
            #expect(text.contains(#"tributary_stage_batch_duration_seconds_count{stage="identity"} 1"#), "\(text)")
            kill(stage, SIGTERM)
            // waitpid blocks: on a thread of its own, never one of the (two, on CI) cooperative threads every test shares.
            let status = await withCheckedContinuation { continuation in
                Thread.detachNewThread { continuation.resume(returning: ProcessRunner.wait(stage)) }
            }
            #expect(status == 0, "graceful shutdown on SIGTERM: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }
}
