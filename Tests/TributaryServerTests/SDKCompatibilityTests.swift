import Foundation
import HummingbirdTesting
import Postgres
import PostgresTesting
import Testing
import TributaryCollection
@testable import TributaryServer
import TributaryService

/// The unmodified Segment and RudderStack Python SDKs from PyPI, pointed at Tributary.
@Suite struct SDKCompatibilityTests {
    static let packages = ["segment-analytics-python==2.4.0", "rudder-sdk-python==2.1.9"]

    /// A virtual environment with the SDKs, made once under .build/ (or `TRIBUTARY_SDK_PYTHON`, a ready interpreter).
    static func python() async throws -> String {
        if let ready = ProcessInfo.processInfo.environment["TRIBUTARY_SDK_PYTHON"], !ready.isEmpty { return ready }
        let venv = TestDatabase.packageRoot.appendingPathComponent(".build/sdk-venv").path
        let python = venv + "/bin/python"
        let check = try? await ProcessRunner.runDetached(python, ["-c", "import segment.analytics, rudderstack.analytics"])
        if check?.status == 0 { return python }
        let python3 = ProcessRunner.which("python3") ?? "/usr/bin/python3"
        let created = try await ProcessRunner.runDetached(python3, ["-m", "venv", "--clear", venv])
        try #require(created.status == 0, "python3 -m venv failed: \(created.tail)")
        let installed = try await ProcessRunner.runDetached(venv + "/bin/pip", ["install", "-q"] + packages)
        try #require(installed.status == 0, "pip install \(packages) failed: \(installed.tail)")
        return python
    }

    @Test(.timeLimit(.minutes(6)))
    func everyEventFromBothSDKsLandsExactlyOnce() async throws {
        let python = try await Self.python()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("sdk_send.py").path
        let rounds = 30
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            let (source, key) = try await SourceStore(client: client).create(name: "python")
            let app = buildApplication(configuration: ServerConfiguration(port: 0), client: client, logger: TestDatabase.logger)
            try await app.test(.live) { (http) async throws in
                let port = try #require(http.port)
                let run = try await ProcessRunner.runDetached(python, [script, "http://127.0.0.1:\(port)", key, String(rounds)])
                #expect(run.status == 0, "SDK script failed: \(run.text)")
            }
            for sdk in ["segment", "rudder"] {
                let counts = try await client.query(
                    """
                    SELECT type, count(*), count(DISTINCT message_id) FROM cdp.events
                    WHERE source_id = \(source.id) AND message_id LIKE \(sdk + "-%") GROUP BY type ORDER BY type
                    """)
                let byType = try counts.map { try $0.decode((String, Int, Int).self) }
                #expect(byType.map(\.0) == ["alias", "group", "identify", "page", "screen", "track"], "\(sdk)")
                #expect(byType.allSatisfy { $0.1 == rounds && $0.2 == rounds }, "\(sdk): \(byType)")
            }
            // What the SDKs sent arrived intact: names, traits, properties, library context, clock-skew-corrected times.
            let track = try await client.query(
                """
                SELECT event, properties->>'currency', context->'library'->>'name', user_id,
                       abs(extract(epoch FROM timestamp - received_at)) < 60
                FROM cdp.events WHERE message_id = 'rudder-track-3'
                """
            ).first!
            let (event, currency, library, user, recent) = try track.decode((String, String, String, String, Bool).self)
            #expect(event == "Order Completed" && currency == "EUR" && user == "rudder-user-3" && recent)
            #expect(library.contains("analytics-python") || library.contains("rudder"), "\(library)")
            let page = try await client.query(
                "SELECT name, properties->>'path' FROM cdp.events WHERE message_id = 'segment-page-0'"
            ).first!
            #expect(try page.decode((String?, String).self).1 == "/docs")
        }
    }
}
