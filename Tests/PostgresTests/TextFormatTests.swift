import Foundation
@testable import Postgres
import Testing

/// PostgreSQL's text formats, parsed and written without a server.
@Suite struct TextFormatTests {
    @Test(arguments: [
        ("2026-11-25 10:11:12.5+00", 1_795_601_472.5),
        ("2026-11-25 10:11:12+05:30", 1_795_581_672.0),
        ("2026-11-25 10:11:12.000001-08", 1_795_630_272.000001),
        ("2026-11-25T10:11:12Z", 1_795_601_472.0),
        ("1969-12-31 23:59:59.999999+00", -0.000001),
        ("2026-11-25", 1_795_564_800.0),
        ("2026-11-25 10:11:12", 1_795_601_472.0),
        ("1900-02-28 00:00:00+00:00:36", -2_203_977_636.0),
    ])
    func timestamps(text: String, seconds: Double) throws {
        let date = try PostgresTime.parse(text)
        #expect(abs(date.timeIntervalSince1970 - seconds) < 0.000_000_5)
    }

    @Test func timestampsThatAreNotAreRefused() {
        for text in ["", "2026-13-01", "2026-11-25 1:2:3", "yesterday", "2026-11-25 10:11:12 BC", "0044-03-15 BC"] {
            #expect(throws: (any Error).self) { try PostgresTime.parse(text) }
        }
    }

    @Test func formattedTimestampsParseBack() throws {
        for seconds in [0.0, 1_795_615_872.123456, -2_203_977_636.5, 4_102_444_799.999999] {
            let date = Date(timeIntervalSince1970: seconds)
            let text = PostgresTime.format(date)
            #expect(text.hasSuffix("Z"))
            #expect(abs(try PostgresTime.parse(text).timeIntervalSince1970 - seconds) < 0.000_000_5)
        }
        #expect(PostgresTime.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000000Z")
    }

    @Test func arrayLiterals() throws {
        #expect(try ArrayLiteral.parse("{}") == [])
        #expect(try ArrayLiteral.parse("{a,b}") == ["a", "b"])
        #expect(
            try ArrayLiteral.parse(#"{"a,b","say \"hi\"",NULL,"NULL","back\\slash",""}"#)
                == ["a,b", "say \"hi\"", nil, "NULL", "back\\slash", ""])
        #expect(try ArrayLiteral.parse("[0:1]={x,y}") == ["x", "y"])
        #expect(throws: (any Error).self) { try ArrayLiteral.parse("{{1,2},{3,4}}") }
        #expect(throws: (any Error).self) { try ArrayLiteral.parse("not an array") }
        let values: [String?] = ["", "a\"b", "c\\d", nil, "NULL", "{x}"]
        #expect(try ArrayLiteral.parse(ArrayLiteral.encode(values)) == values)
    }

    @Test func byteaHex() throws {
        #expect(try ByteaText.decode("\\x") == [])
        #expect(try ByteaText.decode("\\x00ff7Fa0") == [0, 255, 127, 160])
        #expect(throws: (any Error).self) { try ByteaText.decode("\\000") }
        #expect(throws: (any Error).self) { try ByteaText.decode("\\x0g") }
    }

    @Test func lockKeysAreStableAcrossProcesses() {
        // FNV-1a 64 of "tributary.migrate", fixed so every build and process agrees.
        #expect(AdvisoryLockKey(name: "tributary.migrate").value == AdvisoryLockKey(name: "tributary.migrate").value)
        #expect(AdvisoryLockKey(name: "").value == Int64(bitPattern: 0xcbf2_9ce4_8422_2325))
        #expect(AdvisoryLockKey(name: "a").value == Int64(bitPattern: 0xaf63_dc4c_8601_ec8c))
    }

    @Test func conninfoQuotingSurvivesHostilePaths() throws {
        let text = EmbeddedPostgres.conninfo([("host", "/tmp/it's a \\ dir"), ("dbname", "x y")])
        let parsed = try PostgresConfiguration.parse(text)
        #expect(parsed["host"] == "/tmp/it's a \\ dir")
        #expect(parsed["dbname"] == "x y")
    }

    @Test func uuidTextMatchesFoundationAndRefusesMalformedText() {
        for _ in 0..<1000 {
            let id = UUID()
            #expect(UUIDText.lowercaseString(id) == id.uuidString.lowercased())
            #expect(UUIDText.parse(id.uuidString) == id && UUIDText.parse(id.uuidString.lowercased()) == id)
        }
        for bad in [
            "", "6ba7b810-9dad-11d1-80b4-00c04fd430c", "6ba7b810-9dad-11d1-80b4-00c04fd430c8x",
            "6ba7b810x9dad-11d1-80b4-00c04fd430c8", "6ba7b810-9dad-11d1-80b4-00c04fd430cg", "é6ba7b810-9dad-11d1-80b4-00c04fd430",
        ] {
            #expect(UUIDText.parse(bad) == nil, "\(bad)")
        }
    }
}
