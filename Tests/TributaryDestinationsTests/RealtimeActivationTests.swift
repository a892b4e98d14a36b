import Foundation
import LocalReceiver
import Hummingbird
import Logging
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryDestinations
@testable import TributaryIdentity
@testable import TributaryModel
@testable import TributaryProfiles
@testable import TributarySegments
import TributaryServer
@testable import TributarySyncs

/// The real-time path: an event through the HTTP API, the identity and profile stages, the real-time segment, the
/// outbox (`cdp.segment_changes`) and a real-time sync to a webhook.
@Suite struct RealtimeActivationTests {
    typealias F = SyncFixture

    /// A real-time segment "carts" (added to cart in the last 30 days, has an email) and a real-time audience sync of
    /// it to the receiver at `base`.
    static func setUp(_ client: PostgresClient, base: String) async throws {
        try await F.migrated(client)
        try await SegmentStore(client: client, logger: TestDatabase.logger).apply(
            SegmentDefinitions([
                Segment("carts", realtime: true, fields: [.trait("email")]) {
                    Event("Added to Cart", within: .days(30)).occurred
                    Trait<String>("email").exists
                }
            ]))
        try await F.apply(
            """
            {"syncs": [{"name": "carts_hook", "source": {"segment": "carts"}, "primaryKey": ["profile_id"], "mode": "audience",
              "realtime": true, "destination": {"type": "webhook", "url": "\(base)/hook", "secret": "s"}}]}
            """, client)
    }

    /// Each change the receiver got: "op email idempotency-key", from every request (answered or not).
    static func received(_ receiver: TestReceiver) async -> [(op: String, email: String, key: String)] {
        await receiver.requests.flatMap { request -> [(op: String, email: String, key: String)] in
            guard let body = try? JSONParser.parse(request.body), case .array(let changes)? = body["changes"] else { return [] }
            return changes.map { change in
                guard case .string(let op)? = change["op"] else { return ("?", "?", "?") }
                let email: String = if case .string(let text)? = change["fields"]?["email"] { text } else { "?" }
                return (op, email, request.header("Idempotency-Key") ?? "")
            }
        }
    }

    static func event(_ type: String, user: String, _ extra: String, messageID: String) -> String {
        #"{"type": "\#(type)", "userId": "\#(user)", "messageId": "\#(messageID)", \#(extra)}"#
    }

    /// An HTTP 200 for a qualifying event leads to exactly one webhook delivery, with the server, both stages and
    /// the activation loop running as `tributary serve` and `tributary worker` run them; an event that disqualifies
    /// leads to exactly one removal; a retried request (same messageId) changes nothing.
    @Test func qualifyingEventThroughHTTPProducesExactlyOneDelivery() async throws {
        let receiver = TestReceiver()
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase(maxConnections: 8) { (client) async throws in
                try await Self.setUp(client, base: base)
                let (_, writeKey) = try await SourceStore(client: client).create(name: "web")
                let runner = F.runner(client)
                let (ports, portSink) = AsyncStream<Int>.makeStream()
                let app = buildApplication(
                    configuration: ServerConfiguration(port: 0, writeKeyCacheTTL: .zero), client: client,
                    logger: TestDatabase.logger,
                    onListening: { portSink.yield($0) })
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await app.runService() }
                    group.addTask {
                        try await IdentityStage(client: client, logger: TestDatabase.logger).run(pollInterval: .seconds(30))
                    }
                    group.addTask {
                        try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()]).run(
                            pollInterval: .seconds(30))
                    }
                    group.addTask {
                        await RealtimeActivation(client: client, logger: TestDatabase.logger, runner: runner).run(
                            pollInterval: .seconds(30))
                    }
                    defer { group.cancelAll() }
                    var iterator = ports.makeAsyncIterator()
                    let port = try #require(await iterator.next())
                    // Generous: the server shares 8 connections with both stages and the activation loop while
                    // the whole suite runs; a 10 s deadline was exceeded in a loaded CI run. This test is about
                    // what is delivered, not how fast.
                    let sender = HTTPSender(timeout: .seconds(60))
                    let auth = "Basic " + Data("\(writeKey):".utf8).base64EncodedString()
                    func post(_ body: String) async throws {
                        let response = try await sender.send(
                            "POST", "http://127.0.0.1:\(port)/v1/batch",
                            headers: [("Content-Type", "application/json"), ("Authorization", auth)], body: Array(body.utf8))
                        #expect(response.status == 200, "\(response.text)")
                    }
                    /// Waits (polling the receiver, at most 20 s: the stages wake each other by NOTIFY; the 30 s polls
                    /// would miss this) until it holds `count` changes.
                    func waitFor(_ count: Int) async throws {
                        for _ in 0..<400 where await Self.received(receiver).count < count {
                            try await Task.sleep(for: .milliseconds(50))
                        }
                    }

                    let now = ISO8601DateFormatter().string(from: Date())
                    try await post(
                        #"{"batch": [\#(Self.event("identify", user: "u1", #""traits": {"email": "ann@example.com"}, "timestamp": "\#(now)""#, messageID: "m1")),\#(Self.event("track", user: "u1", #""event": "Added to Cart", "timestamp": "\#(now)""#, messageID: "m2"))]}"#
                    )
                    try await waitFor(1)
                    var got = await Self.received(receiver)
                    #expect(got.map { "\($0.op) \($0.email)" } == ["add ann@example.com"])

                    // The same request again (a client retry): stored once, nothing more delivered.
                    try await post(
                        #"{"batch": [\#(Self.event("track", user: "u1", #""event": "Added to Cart", "timestamp": "\#(now)""#, messageID: "m2"))]}"#
                    )
                    // An event of another user that qualifies nobody, to have a later change to wait for.
                    try await post(
                        #"{"batch": [\#(Self.event("identify", user: "u2", #""traits": {"email": "bob@example.com"}, "timestamp": "\#(now)""#, messageID: "m3")),\#(Self.event("track", user: "u2", #""event": "Added to Cart", "timestamp": "\#(now)""#, messageID: "m4"))]}"#
                    )
                    try await waitFor(2)
                    // The email is removed: u1 leaves the segment, and is removed from the audience once.
                    try await post(
                        #"{"batch": [\#(Self.event("identify", user: "u1", #""traits": {"email": null}, "timestamp": "\#(ISO8601DateFormatter().string(from: Date().addingTimeInterval(1)))""#, messageID: "m5"))]}"#
                    )
                    try await waitFor(3)
                    // Further passes find nothing to send.
                    let extra = try await RealtimeActivation(client: client, logger: TestDatabase.logger, runner: runner)
                        .catchUp()
                    #expect(extra.delivered == 0)
                    got = await Self.received(receiver)
                    #expect(
                        got.map { "\($0.op) \($0.email)" } == [
                            "add ann@example.com", "add bob@example.com", "remove ann@example.com",
                        ])
                    #expect(
                        try await client.query(
                            "SELECT count(*) FROM cdp.sync_runs WHERE trigger = 'realtime' AND status = 'failed'"
                        ).scalar(Int.self) == 0)
                }
            }
        }
    }

    /// Every hop is a separate step here, and the process "crashes" between any two of them (the next step runs in
    /// a fresh activation, as a restarted worker would). A delivery the receiver applied but answered 500 is sent
    /// again with the same idempotency key: the receiver sees the change once.
    @Test func crashesBetweenStagesLoseNothingAndRepeatNothing() async throws {
        let receiver = TestReceiver()
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await Self.setUp(client, base: base)
                let runner = F.runner(client)
                func activation() -> RealtimeActivation {
                    RealtimeActivation(client: client, logger: TestDatabase.logger, runner: runner)
                }
                // The sync is seen first with an empty segment.
                #expect(try await activation().catchUp().runs == 1)

                let writer = EventWriter(client: client, logger: TestDatabase.logger)
                func write(_ events: [IncomingEvent]) async throws { _ = try await writer.write(events, sourceID: "src-test") }
                func event(_ type: CallType, user: String, name: String? = nil, traits: String = "{}") -> IncomingEvent {
                    IncomingEvent(
                        messageID: UUID().uuidString, type: type, event: name, name: nil, userID: user, anonymousID: nil,
                        groupID: nil,
                        previousID: nil, timestamp: Date(), originalTimestamp: nil, sentAt: nil, receivedAt: Date(),
                        properties: "{}",
                        traits: traits, context: "{}", integrations: "{}")
                }
                try await write([
                    event(.identify, user: "u1", traits: #"{"email": "ann@example.com"}"#),
                    event(.track, user: "u1", name: "Added to Cart"),
                ])
                // Crash after collection: nothing downstream ran; the activation finds nothing yet.
                #expect(try await activation().catchUp().delivered == 0)
                _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
                // Crash after identity.
                #expect(try await activation().catchUp().delivered == 0)
                _ = try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()]).catchUp()
                #expect(
                    try await client.query("SELECT count(*) FROM cdp.segment_changes WHERE change = 'entered'").scalar(Int.self)
                        == 1)

                // The receiver applies the change but answers 500 (a crash of the receiver's reply, or of the
                // worker before it recorded the answer) for every try of this run.
                await receiver.setResponder { _ in .init(status: 500) }
                let failed = try await activation().catchUp()
                #expect(failed.failed == 1 && failed.delivered == 0)
                #expect(try await client.query("SELECT count(*) FROM cdp.sync_pending").scalar(Int.self) == 1)
                await receiver.setResponder { _ in .init() }
                let recovered = try await activation().catchUp()
                #expect(recovered.delivered == 1 && recovered.changes == 1)
                #expect(try await activation().catchUp().delivered == 0)

                let got = await Self.received(receiver)
                #expect(got.allSatisfy { $0.op == "add" && $0.email == "ann@example.com" }, "\(got)")
                #expect(
                    Set(got.map(\.key)).count == 1, "every try of the one change carries one idempotency key: \(got.map(\.key))")
                #expect(try await client.query("SELECT count(*) FROM cdp.sync_pending").scalar(Int.self) == 0)
                #expect(try await client.query("SELECT count(*) FROM cdp.sync_state WHERE NOT removed").scalar(Int.self) == 1)

                // A crash after the delivery was confirmed but before the checkpoint moved: the changes are read
                // again and send nothing.
                try await client.execute("UPDATE cdp.sync_realtime SET change_id = 0")
                let replay = try await activation().catchUp()
                #expect(replay.changes == 1 && replay.delivered == 0)
                #expect(await Self.received(receiver).count == got.count)
            }
        }
    }

    @Test func realtimeSyncErrorsNameTheProblem() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            try await SegmentStore(client: client, logger: TestDatabase.logger).apply(
                SegmentDefinitions([
                    Segment("scheduled") { Trait<String>("plan") == "pro" }
                ]))
            func error(_ sync: String) async -> String {
                do {
                    try await F.apply(
                        #"{"syncs": [{"name": "s", "destination": {"type": "file", "path": "/tmp/x.jsonl"}, "realtime": true, \#(sync)}]}"#,
                        client)
                    return "no error"
                } catch { return "\(error)" }
            }
            #expect(
                await error(#""source": {"relation": "t"}, "primaryKey": ["id"]"#)
                    == "syncs[0].realtime: a real-time sync's source must be a segment")
            #expect(
                await error(#""source": {"segment": "scheduled"}, "primaryKey": ["email"]"#)
                    == #"syncs[0].primaryKey: a real-time sync is keyed by ["profile_id"]"#)
            #expect(
                await error(#""source": {"segment": "scheduled"}, "primaryKey": ["profile_id"]"#)
                    == #"syncs[0].realtime: segment 'scheduled' is not real-time; mark it "realtime": true and run segments apply"#
            )
            #expect(
                await error(#""source": {"segment": "nope"}, "primaryKey": ["profile_id"]"#)
                    == "syncs[0].source.segment: no segment named 'nope' is applied")
        }
    }
}
