import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Metrics
import NIOCore
import Postgres
import PostgresTesting
import Testing
import TributaryCollection
import TributaryIdentity
import TributaryProfiles
import TributarySegments
@testable import TributaryServer
import TributaryService

/// The stream stages' metrics at `/metrics`, through a real socket: the stages run as in `tributary serve`, with the
/// server's registry bound as their metrics factory for this test's task only (tests share one process).
@Suite struct StageMetricsTests {
    @Test func stagesReportEventsBatchesAndLag() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            let (_, key) = try await SourceStore(client: client).create(name: "web")
            let metrics = ServerMetrics()
            let app = buildApplication(
                configuration: ServerConfiguration(port: 0, writeKeyCacheTTL: .zero), client: client, metrics: metrics,
                logger: TestDatabase.logger)
            try await withMetricsFactory(metrics.factory) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await IdentityStage(client: client, logger: TestDatabase.logger).run() }
                    group.addTask {
                        try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()]).run()
                    }
                    defer { group.cancelAll() }
                    try await app.test(.live) { http in
                        let calls = (0..<5).map {
                            #"{"type":"track","userId":"u\#($0)","event":"Viewed","anonymousId":"a\#($0)"}"#
                        }
                        var headers = HTTPFields()
                        headers[.authorization] = "Basic " + Data("\(key):".utf8).base64EncodedString()
                        headers[.contentType] = "application/json"
                        try await http.execute(
                            uri: "/v1/batch", method: .post, headers: headers,
                            body: ByteBuffer(string: #"{"batch":[\#(calls.joined(separator: ","))]}"#)
                        ) { (r: TestResponse) async throws in #expect(r.status == .ok) }

                        // Both stages processed the 5 events, and the lag sampler has seen them through.
                        let wanted = [
                            #"tributary_stage_events_total{stage="identity"} 5"#,
                            #"tributary_stage_events_total{stage="profiles"} 5"#,
                            #"tributary_stage_lag_events{stage="identity"} 0"#,
                            #"tributary_stage_lag_events{stage="profiles"} 0"#,
                        ]
                        var text = ""
                        let deadline = ContinuousClock.now + .seconds(60)
                        while ContinuousClock.now < deadline {
                            text = try await http.execute(uri: "/metrics", method: .get) { String(buffer: $0.body) }
                            if wanted.allSatisfy(text.contains) { break }
                            try await Task.sleep(for: .milliseconds(200))
                        }
                        for line in wanted { #expect(text.contains(line), "\(line) in:\n\(text)") }
                        #expect(text.contains(#"tributary_stage_batch_duration_seconds_count{stage="identity"}"#))
                        #expect(text.contains(#"tributary_stage_batch_duration_seconds_bucket{stage="profiles""#))
                    }
                }
            }
        }
    }
}
