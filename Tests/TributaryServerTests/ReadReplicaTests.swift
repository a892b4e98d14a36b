import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Postgres
import PostgresTesting
import Testing
import TributaryCollection
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributaryRuntime
@testable import TributaryServer
import TributaryService

/// The profile API reading from a real streaming replica (`pg_basebackup -R` of a private cluster, a second
/// embedded server following it): lookups are answered by the replica — even with the primary stopped — and by the
/// primary when the replica is down, never with an error.
@Suite struct ReadReplicaTests {
    @Test(.timeLimit(.minutes(6)))
    func profileLookupsReadTheReplicaAndFallBackToThePrimary() async throws {
        try await TestDatabase.withPrivateCluster { primaryServer in
            let logger = TestDatabase.logger
            let primaryConfiguration = try await primaryServer.start()
            let primary = PostgresClient(configuration: primaryConfiguration, options: .init(maxConnections: 4), logger: logger)
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: logger).migrate(primary)
            let (source, _) = try await SourceStore(client: primary).create(name: "web")
            let (_, reader) = try await APITokenStore(client: primary).create(name: "reader", scopes: [.profilesRead])
            let writer = EventWriter(client: primary, maxQueuedEvents: 100, logger: logger) { _, _, _ in }
            let parsed = try SegmentParser(limits: CollectionLimits()).parse(
                Array(
                    #"{"batch": [{"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com"}, "messageId": "m1"}]}"#
                        .utf8),
                type: nil, receivedAt: Date())
            _ = try await writer.write(parsed.events, sourceID: source.id)
            _ = try await IdentityStage(client: primary, logger: logger).catchUp()

            let base = URL(fileURLWithPath: try primaryServer.layout().dataDirectory).deletingLastPathComponent()
            let replicaServer = try await primaryServer.makeReplica(dataDirectory: base.appendingPathComponent("replica").path)
            let replicaConfiguration = try await replicaServer.start()
            defer { Task { _ = try? await replicaServer.stop() } }
            let replicaClient = PostgresClient(
                configuration: replicaConfiguration.forReplicaReads(process: "test"), options: .init(maxConnections: 2),
                logger: logger)
            let metrics = ServerMetrics()
            let replica = ReadReplica(client: replicaClient, maxLag: .seconds(10), factory: metrics.factory)
            #expect(try await replicaClient.query("SELECT pg_is_in_recovery()").scalar(Bool.self), "a hot standby")
            // The replica has replayed the profile.
            var replayed = false
            for _ in 0..<100 where !replayed {
                replayed =
                    try await replicaClient.query("SELECT count(*) FROM cdp.identity_nodes WHERE value = 'u-1'").scalar(Int.self)
                    == 1
                if !replayed { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(replayed)
            await replica.measure()
            #expect(replica.usable)

            let app = buildApplication(
                configuration: ServerConfiguration(port: 0, apiTokenCacheTTL: .seconds(600), console: true, readReplica: replica),
                client: primary, metrics: metrics, logger: logger)
            try await app.test(.live) { http in
                var headers = HTTPFields()
                headers[.authorization] = "Bearer \(reader)"
                func lookup() async throws -> HTTPResponse.Status {
                    try await http.execute(uri: "/v1/profiles/email/ada@example.com", method: .get, headers: headers) {
                        (response: TestResponse) async throws in response.status
                    }
                }
                func fallbacks() async throws -> Int {
                    let text = try await http.execute(uri: "/metrics", method: .get) { (response: TestResponse) async throws in
                        String(buffer: response.body)
                    }
                    let line = text.split(separator: "\n").first { $0.hasPrefix("tributary_read_replica_fallbacks_total ") }
                    return line.flatMap { Int($0.split(separator: " ")[1]) } ?? 0
                }
                // Both up: the token is checked (and cached) on the primary, the lookup read on the replica.
                #expect(try await lookup() == .ok)
                #expect(try await fallbacks() == 0)

                // The console's profile explorer reads the replica too (no fallback counted).
                let profile = try await primary.query("SELECT profile_id FROM cdp.identity_nodes WHERE value = 'u-1'").scalar(
                    UUID.self)
                let console = try await ConsoleTests.signIn(http, token: reader)
                let page = "/console/profiles/\(profile.uuidString.lowercased())"
                let shown = try await ConsoleTests.get(http, page, cookie: console.cookie)
                #expect(shown.status == .ok && shown.body.contains("u-1"), "\(shown.body.prefix(300))")
                let found = try await ConsoleTests.get(http, "/console/profiles?q=email:ADA@example.com", cookie: console.cookie)
                #expect(found.status == .seeOther)
                #expect(try await fallbacks() == 0, "the console read the replica")

                // The primary stopped: the replica alone answers the lookup.
                try await primaryServer.stop()
                #expect(try await lookup() == .ok, "answered by the replica while the primary is down")
                _ = try await primaryServer.start()

                // The replica stopped: lookups go to the primary, counted as fallbacks.
                _ = try await replicaServer.stop()
                var status = HTTPResponse.Status.serviceUnavailable
                for _ in 0..<50 where status != .ok {
                    status = try await lookup()
                    if status != .ok { try await Task.sleep(for: .milliseconds(200)) }
                }
                #expect(status == .ok, "answered by the primary while the replica is down")
                let before = try await fallbacks()
                let fromPrimary = try await ConsoleTests.get(http, page, cookie: console.cookie)
                #expect(fromPrimary.status == .ok && fromPrimary.body.contains("u-1"))
                #expect(try await fallbacks() > before, "the console's profile page fell back to the primary")
                await replica.measure()
                #expect(!replica.usable)
                let exposition = try await http.execute(uri: "/metrics", method: .get) { (response: TestResponse) async throws in
                    String(buffer: response.body)
                }
                #expect(exposition.contains("tributary_read_replica_up 0"), "\(exposition)")
                #expect(exposition.contains("tributary_read_replica_lag_seconds"))
                #expect(exposition.contains("tributary_read_replica_fallbacks_total"))
            }
            await replicaClient.shutdown()
            await primary.shutdown()
        }
    }
}
