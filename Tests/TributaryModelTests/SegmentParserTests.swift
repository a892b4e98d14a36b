import Foundation
import Testing
@testable import TributaryModel

/// JSON parsing and Segment validation, without a database.
@Suite struct SegmentParserTests {
    let received = Date(timeIntervalSince1970: 1_795_600_000)

    func parse(
        _ json: String, type: CallType? = nil, limits: CollectionLimits = CollectionLimits()
    ) throws -> SegmentParser.Parsed {
        try SegmentParser(limits: limits).parse(Array(json.utf8), type: type, receivedAt: received)
    }

    @Test func jsonKeepsNumbersExactlyAndRoundTrips() throws {
        let text = #"{"a":12345678901234567890.123456789,"b":[1,-2.5e10,true,null],"c":"q\"\\\n\u00e9\ud83c\udf0a","d":{}}"#
        let value = try JSONParser.parse(Array(text.utf8))
        #expect(value["a"] == .number("12345678901234567890.123456789"))
        #expect(value["c"] == .string("q\"\\\né🌊"))
        #expect(try JSONParser.parse(Array(value.serialized.utf8)) == value)
    }

    @Test func serializedSizeMatchesTheSerializedBytes() throws {
        for text in [#"{"a":[1,true,null,"x\"y\\z\n\u0001é🌊"],"b":{},"c":[]}"#, "[]", #""""#, "12.5e3"] {
            let value = try JSONParser.parse(Array(text.utf8))
            #expect(value.serializedSize == value.serialized.utf8.count, "\(text)")
        }
    }

    @Test(arguments: [
        ("", "unexpected end"), ("{", "end of input"), ("{\"a\":1}x", "after the JSON value"), ("[01]", "leading zeros"),
        ("\"\\u0000\"", "\\u0000"), ("\"\\ud800\"", "surrogate"), ("\"a\tb\"", "control character"), ("1e99999", "exponent"),
        ("{'a':1}", "string key"), ("[1,]", "unexpected character"), ("nul", "literal"),
    ])
    func invalidJSONIsNamed(text: String, fragment: String) {
        do {
            _ = try JSONParser.parse(Array(text.utf8))
            Issue.record("\(text) must be refused")
        } catch let error as JSONParseError {
            #expect(error.description.contains(fragment), "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func invalidUTF8AndDeepNestingAreRefused() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xC3, 0x28, 0x22]) }
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(deep.utf8)) }
        let long = "[" + String(repeating: "9", count: 500) + "]"
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(long.utf8)) }
    }

    @Test func singleCallsAreValidatedPerType() throws {
        let track = try parse(#"{"userId":42,"event":"Signed Up","properties":{"plan":"pro"},"writeKey":"k"}"#, type: .track)
        #expect(track.events.count == 1 && track.issues.isEmpty)
        #expect(track.events[0].userID == "42")
        #expect(track.events[0].properties == #"{"plan":"pro"}"#)
        #expect(track.writeKey == "k")
        #expect(!track.events[0].messageID.isEmpty, "a missing messageId is assigned")
        let longest = String(repeating: "m", count: 100)
        #expect(try parse(#"{"userId":"u","messageId":"\#(longest)"}"#, type: .identify).events.first?.messageID == longest)

        let cases: [(String, CallType, String)] = [
            (#"{"event":"x"}"#, .track, "userId: userId or anonymousId is required"),
            (#"{"userId":"u"}"#, .track, "event: required for track calls"),
            (#"{"userId":"u","event":""}"#, .track, "event: required for track calls"),
            (#"{"userId":"u"}"#, .group, "groupId: required for group calls"),
            (#"{"userId":"u"}"#, .alias, "previousId: required for alias calls"),
            (#"{"previousId":"p","anonymousId":"a"}"#, .alias, "userId: required for alias calls"),
            (#"{"userId":["u"]}"#, .identify, "userId: must be a string or a number"),
            (#"{"userId":"u","traits":[1]}"#, .identify, "traits: must be an object"),
            (#"{"userId":"u","timestamp":"yesterday"}"#, .identify, "timestamp: 'yesterday' is not an ISO-8601 timestamp"),
            (#"{"userId":"u","timestamp":"1969-01-01T00:00:00Z"}"#, .identify, "timestamp: is before 1970-01-01"),
            (
                #"{"userId":"u","messageId":"\#(String(repeating: "é", count: 101))"}"#, .identify,
                "messageId: longer than 100 characters (101); Segment's limit, which deduplication relies on"
            ),
        ]
        for (json, type, expected) in cases {
            let parsed = try parse(json, type: type)
            #expect(parsed.events.isEmpty, "\(json)")
            #expect(parsed.issues.map(\.description) == [expected], "\(json)")
        }
    }

    @Test func batchesKeepValidItemsAndNameTheBadOnes() throws {
        let parsed = try parse(
            """
            {"batch":[
              {"type":"identify","userId":"u1","context":{"ip":"1.2.3.4"}},
              {"userId":"u2","event":"x"},
              {"type":"track","userId":"u3"},
              {"type":"page","anonymousId":"a","properties":{"path":"/"}},
              "not an object"
            ],"context":{"library":{"name":"lib"},"ip":"0.0.0.0"},"integrations":{"All":false}}
            """)
        #expect(parsed.events.map(\.type) == [.identify, .page])
        #expect(
            parsed.issues.map(\.description) == [
                "batch[1].type: required in batch items", "batch[2].event: required for track calls",
                "batch[4]: must be an object",
            ])
        // Batch context is merged in; the call's own keys win (jsonb keeps the last of a repeated key).
        #expect(parsed.events[0].context == #"{"library":{"name":"lib"},"ip":"0.0.0.0","ip":"1.2.3.4"}"#)
        #expect(parsed.events[1].integrations == #"{"All":false}"#)
    }

    @Test func clockSkewIsCorrectedAndFutureTimestampsClamped() throws {
        // The client's clock is 1 hour fast: it sent at 13:00:10 an event from 13:00:00 (its time).
        let skewed = try parse(
            #"{"userId":"u","event":"e","originalTimestamp":"2026-11-25T13:00:00Z","sentAt":"2026-11-25T13:00:10Z"}"#,
            type: .track)
        #expect(skewed.events[0].timestamp == received.addingTimeInterval(-10))
        #expect(skewed.events[0].originalTimestamp == Date(timeIntervalSince1970: 1_795_611_600))
        // Batch-level sentAt applies to items.
        let batch = try parse(
            #"{"sentAt":"2026-11-25T13:00:10Z","batch":[{"type":"track","userId":"u","event":"e","originalTimestamp":"2026-11-25T13:00:00.5Z"}]}"#
        )
        #expect(batch.events[0].timestamp == received.addingTimeInterval(-9.5))
        // An explicit timestamp (an import) is kept as given.
        let explicit = try parse(#"{"userId":"u","event":"e","timestamp":"2015-03-01T10:00:00+02:00"}"#, type: .track)
        #expect(explicit.events[0].timestamp == Date(timeIntervalSince1970: 1_425_196_800))
        // More than a day in the future becomes receivedAt; the original is kept.
        let future = try parse(#"{"userId":"u","event":"e","timestamp":"2030-01-01T00:00:00Z"}"#, type: .track)
        #expect(future.events[0].timestamp == received)
        #expect(future.events[0].originalTimestamp == Date(timeIntervalSince1970: 1_893_456_000))
        // Nothing given: receivedAt.
        #expect(try parse(#"{"userId":"u","event":"e"}"#, type: .track).events[0].timestamp == received)
    }

    @Test func limitsAreNamed() throws {
        var limits = CollectionLimits()
        limits.maxBatchEvents = 3
        let items = Array(repeating: #"{"type":"track","userId":"u","event":"e"}"#, count: 4).joined(separator: ",")
        #expect(throws: RequestRejection.self) { try parse("{\"batch\":[\(items)]}", limits: limits) }
        do {
            _ = try parse("{\"batch\":[\(items)]}", limits: limits)
        } catch let rejection as RequestRejection {
            #expect(rejection.code == "batch_too_many_events")
            #expect(rejection.message.contains("limit is 3"))
        }
        let big = String(repeating: "x", count: 33 * 1024)
        let oversized = try parse(#"{"batch":[{"type":"track","userId":"u","event":"e","properties":{"p":"\#(big)"}}]}"#)
        #expect(oversized.issues.first?.message.contains("32 KB") == true)
        #expect(throws: RequestRejection.self) {
            try parse(#"{"userId":"u","event":"e","properties":{"p":"\#(big)"}}"#, type: .track)
        }
        let huge = String(repeating: " ", count: 501 * 1024)
        #expect(throws: RequestRejection.self) { try parse("{\"batch\":[]}" + huge) }
        #expect(throws: RequestRejection.self) { try parse("[1]") }
        #expect(throws: RequestRejection.self) { try parse(#"{"batch":{}}"#) }
    }
}
