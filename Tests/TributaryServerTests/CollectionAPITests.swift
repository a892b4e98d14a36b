import CZlib
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
@testable import TributaryServer
import TributaryService

/// The collection API through a real socket, against real PostgreSQL.
@Suite struct CollectionAPITests {
    struct Setup {
        var client: PostgresClient
        var key: String
        var sourceName: String
    }

    /// A migrated fresh database with one source, and the application listening on an ephemeral port.
    func withServer(
        maxQueuedEvents: Int = 50_000,
        _ body: @escaping @Sendable (any TestClientProtocol, Setup) async throws -> Void
    ) async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            let (_, key) = try await SourceStore(client: client).create(name: "web")
            let app = buildApplication(
                configuration: ServerConfiguration(port: 0, maxQueuedEvents: maxQueuedEvents, writeKeyCacheTTL: .zero),
                client: client, logger: TestDatabase.logger)
            let setup = Setup(client: client, key: key, sourceName: "web")
            try await app.test(.live) { http in try await body(http, setup) }
        }
    }

    static func basic(_ user: String, colon: Bool = true) -> HTTPFields {
        var fields = HTTPFields()
        fields[.authorization] = "Basic " + Data((user + (colon ? ":" : "")).utf8).base64EncodedString()
        fields[.contentType] = "application/json"
        return fields
    }

    static func json(_ response: TestResponse) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any] ?? [:]
    }

    static func count(_ client: PostgresClient) async throws -> Int {
        try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self)
    }

    @Test func everyCallTypeIsStoredAndAcknowledged() async throws {
        try await withServer { http, setup in
            let calls: [(String, String)] = [
                ("identify", #"{"userId":"u1","traits":{"email":"a@example.com"}}"#),
                ("track", #"{"userId":"u1","event":"Order Completed","properties":{"revenue":19.99}}"#),
                ("page", #"{"anonymousId":"a1","name":"Home"}"#),
                ("screen", #"{"anonymousId":"a1","name":"Settings"}"#),
                ("group", #"{"userId":"u1","groupId":"g1","traits":{"plan":"team"}}"#),
                ("alias", #"{"userId":"u1","previousId":"a1"}"#),
            ]
            for (type, body) in calls {
                try await http.execute(
                    uri: "/v1/\(type)", method: .post, headers: Self.basic(setup.key), body: ByteBuffer(string: body)
                ) { (r: TestResponse) async throws in
                    #expect(r.status == .ok, "\(type)")
                    #expect(try Self.json(r)["success"] as? Bool == true)
                }
            }
            let types = try await setup.client.query("SELECT array_agg(type ORDER BY seq) FROM cdp.events").scalar([String].self)
            #expect(types == calls.map(\.0))
            let revenue = try await setup.client.query(
                "SELECT properties->>'revenue' FROM cdp.events WHERE type = 'track'"
            ).scalar(String.self)
            #expect(revenue == "19.99")
        }
    }

    @Test func writeKeysAreAcceptedEveryDocumentedWay() async throws {
        try await withServer { http, setup in
            let body = #"{"userId":"u","event":"e"}"#
            for headers in [Self.basic(setup.key), Self.basic(setup.key, colon: false)] {
                try await http.execute(uri: "/v1/track", method: .post, headers: headers, body: ByteBuffer(string: body)) {
                    (r: TestResponse) async throws in
                    #expect(r.status == .ok)
                }
            }
            let inBody = #"{"userId":"u","event":"e","writeKey":"\#(setup.key)"}"#
            try await http.execute(uri: "/v1/track", method: .post, body: ByteBuffer(string: inBody)) {
                (r: TestResponse) async throws in #expect(r.status == .ok)
            }
            for headers in [Self.basic("trb_unknown"), HTTPFields()] {
                try await http.execute(uri: "/v1/track", method: .post, headers: headers, body: ByteBuffer(string: body)) {
                    (r: TestResponse) async throws in
                    #expect(r.status == .unauthorized)
                    #expect(try Self.json(r)["code"] as? String == "unauthorized")
                }
            }
            try await SourceStore(client: setup.client).disable(name: setup.sourceName)
            try await http.execute(
                uri: "/v1/track", method: .post, headers: Self.basic(setup.key), body: ByteBuffer(string: body)
            ) { (r: TestResponse) async throws in
                #expect(r.status == .unauthorized)
            }
            #expect(try await Self.count(setup.client) == 3)
        }
    }

    @Test func gzipBodiesAreInflatedAndBadOnesRefused() async throws {
        try await withServer { http, setup in
            let batch = #"{"batch":[{"type":"track","userId":"u","event":"zipped","messageId":"z1"}]}"#
            var headers = Self.basic(setup.key)
            headers[.contentEncoding] = "gzip"
            try await http.execute(
                uri: "/v1/batch", method: .post, headers: headers, body: ByteBuffer(bytes: try gzip(Array(batch.utf8)))
            ) { (r: TestResponse) async throws in
                #expect(r.status == .ok)
            }
            try await http.execute(uri: "/v1/batch", method: .post, headers: headers, body: ByteBuffer(string: "not gzip")) {
                (r: TestResponse) async throws in
                #expect(r.status == .badRequest)
                #expect(try Self.json(r)["code"] as? String == "invalid_gzip")
            }
            // A small body that inflates past 500 KB is refused before it is parsed.
            let bomb = try gzip(Array(("{\"batch\":[" + String(repeating: " ", count: 2_000_000) + "]}").utf8))
            #expect(bomb.count < 50_000)
            try await http.execute(uri: "/v1/batch", method: .post, headers: headers, body: ByteBuffer(bytes: bomb)) {
                (r: TestResponse) async throws in
                #expect(r.status == .badRequest)
                #expect(
                    try Self.json(r)["error"] as? String ?? ""
                        == "the decompressed body is larger than the limit of 512000 bytes (500 KB)")
            }
            var brotli = Self.basic(setup.key)
            brotli[.contentEncoding] = "br"
            try await http.execute(uri: "/v1/batch", method: .post, headers: brotli, body: ByteBuffer(string: batch)) {
                (r: TestResponse) async throws in
                #expect(r.status == .unsupportedMediaType)
            }
            #expect(try await Self.count(setup.client) == 1)
        }
    }

    @Test func badInputGetsAClearErrorAndChangesNothing() async throws {
        try await withServer { http, setup in
            try await http.execute(
                uri: "/v1/track", method: .post, headers: Self.basic(setup.key),
                body: ByteBuffer(string: #"{"userId":"keep","event":"kept"}"#)
            ) { (r: TestResponse) async throws in #expect(r.status == .ok) }
            let bad: [(String, [UInt8], String)] = [
                ("/v1/track", Array("{not json".utf8), "invalid_json"),
                (
                    "/v1/track", [0x7B, 0x22, 0x75, 0x73, 0x65, 0x72, 0x49, 0x64, 0x22, 0x3A, 0x22, 0xC3, 0x28, 0x22, 0x7D],
                    "invalid_json"
                ),
                (
                    "/v1/track", Array((String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000)).utf8),
                    "invalid_json"
                ),
                ("/v1/track", Array(#"{"userId":"u","event":"e","properties":{"n":1e999999}}"#.utf8), "invalid_json"),
                ("/v1/track", Array(#"{"userId":"u","event":"e","properties":{"s":"nul\u0000"}}"#.utf8), "invalid_json"),
                ("/v1/track", Array(#"{"userId":"u","event":7}"#.utf8), "invalid_event"),
                ("/v1/batch", Array(#"{"batch":"nope"}"#.utf8), "invalid_batch"),
                (
                    "/v1/batch", Array(("{\"batch\":[" + Array(repeating: "{}", count: 2501).joined(separator: ",") + "]}").utf8),
                    "batch_too_many_events"
                ),
                (
                    "/v1/batch", Array(("{\"batch\":[],\"pad\":\"" + String(repeating: "x", count: 600_000) + "\"}").utf8),
                    "request_too_large"
                ),
                (
                    "/v1/track",
                    Array(
                        ("{\"userId\":\"u\",\"event\":\"e\",\"properties\":{\"p\":\"" + String(repeating: "x", count: 40_000)
                            + "\"}}").utf8), "event_too_large"
                ),
            ]
            for (uri, body, code) in bad {
                try await http.execute(uri: uri, method: .post, headers: Self.basic(setup.key), body: ByteBuffer(bytes: body)) {
                    (r: TestResponse) async throws in
                    #expect(r.status == .badRequest, "\(code)")
                    let answer = try Self.json(r)
                    #expect(answer["code"] as? String == code)
                    #expect((answer["error"] as? String)?.isEmpty == false)
                }
            }
            try await http.execute(
                uri: "/v1/track", method: .post, headers: Self.basic(setup.key),
                body: ByteBuffer(string: #"{"userId":"u"}"#)
            ) { (r: TestResponse) async throws in
                #expect(try Self.json(r)["error"] as? String == "event: required for track calls")
            }
            // Segment's limit on messageId (100 characters): refused with a 400 naming the field.
            try await http.execute(
                uri: "/v1/track", method: .post, headers: Self.basic(setup.key),
                body: ByteBuffer(string: #"{"userId":"u","event":"e","messageId":"\#(String(repeating: "x", count: 101))"}"#)
            ) { (r: TestResponse) async throws in
                #expect(r.status == .badRequest)
                #expect((try Self.json(r)["error"] as? String)?.hasPrefix("messageId: longer than 100 characters (101)") == true)
            }
            let kept = try await setup.client.query("SELECT array_agg(user_id) FROM cdp.events").scalar([String].self)
            #expect(kept == ["keep"])
        }
    }

    @Test func retriesAreStoredOnceAndPartialBatchesKeepTheGoodCalls() async throws {
        try await withServer { http, setup in
            let batch =
                #"{"batch":[{"type":"track","userId":"u","event":"a","messageId":"m-1"},{"type":"track","userId":"u","messageId":"m-2"},{"type":"identify","userId":"u","messageId":"m-3"}]}"#
            try await http.execute(
                uri: "/v1/batch", method: .post, headers: Self.basic(setup.key), body: ByteBuffer(string: batch)
            ) { (r: TestResponse) async throws in
                #expect(r.status == .ok)
                let answer = try Self.json(r)
                #expect(answer["stored"] as? Int == 2)
                let rejected = answer["rejected"] as? [[String: Any]]
                #expect(rejected?.first?["field"] as? String == "batch[1].event")
            }
            try await http.execute(
                uri: "/v1/batch", method: .post, headers: Self.basic(setup.key), body: ByteBuffer(string: batch)
            ) { (r: TestResponse) async throws in
                let answer = try Self.json(r)
                #expect(answer["stored"] as? Int == 0 && answer["duplicates"] as? Int == 2)
            }
            #expect(try await Self.count(setup.client) == 2)
        }
    }

    @Test func overloadAnswers503WithRetryAfter() async throws {
        try await withServer(maxQueuedEvents: 1) { http, setup in
            let batch = #"{"batch":[{"type":"track","userId":"u","event":"a"},{"type":"track","userId":"u","event":"b"}]}"#
            try await http.execute(
                uri: "/v1/batch", method: .post, headers: Self.basic(setup.key), body: ByteBuffer(string: batch)
            ) { (r: TestResponse) async throws in
                #expect(r.status == .serviceUnavailable)
                #expect(r.headers[.retryAfter] == "1")
            }
            #expect(try await Self.count(setup.client) == 0)
        }
    }

    @Test func healthAndMetrics() async throws {
        try await withServer { http, setup in
            try await http.execute(uri: "/health", method: .get) { (r: TestResponse) async throws in
                #expect(r.status == .ok)
                #expect(try Self.json(r)["status"] as? String == "ok")
            }
            try await http.execute(
                uri: "/v1/track", method: .post, headers: Self.basic(setup.key),
                body: ByteBuffer(string: #"{"userId":"u","event":"e"}"#)
            ) { _ in }
            try await http.execute(uri: "/v1/track", method: .post, headers: Self.basic("nope"), body: ByteBuffer(string: "{}")) {
                _ in
            }
            try await http.execute(uri: "/metrics", method: .get) { (r: TestResponse) async throws in
                let text = String(buffer: r.body)
                #expect(text.contains("tributary_events_accepted_total 1"))
                #expect(text.contains(#"tributary_events_rejected_total{reason="unauthorized"} 1"#))
                #expect(text.contains(#"tributary_http_requests_total{route="track",status="200"} 1"#))
                #expect(text.contains("tributary_collect_request_duration_seconds_bucket"))
                #expect(text.contains("tributary_writer_queue_depth 0"))
            }
        }
    }
}

/// Compresses with zlib's gzip format, for requests like RudderStack's.
func gzip(_ input: [UInt8]) throws -> [UInt8] {
    var stream = z_stream()
    guard
        deflateInit2_(
            &stream, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION,
            Int32(MemoryLayout<z_stream>.size)) == Z_OK
    else { throw CancellationError() }
    defer { deflateEnd(&stream) }
    var input = input
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))) + 64)
    let produced = input.withUnsafeMutableBufferPointer { source in
        output.withUnsafeMutableBufferPointer { target in
            stream.next_in = source.baseAddress
            stream.avail_in = UInt32(source.count)
            stream.next_out = target.baseAddress
            stream.avail_out = UInt32(target.count)
            _ = deflate(&stream, Z_FINISH)
            return target.count - Int(stream.avail_out)
        }
    }
    return Array(output[0..<produced])
}
