import Foundation
import Postgres
import PostgresTesting
import Testing

/// Every supported type goes to the server as a parameter and comes back decoded, NULL included.
@Suite struct TypeRoundTripTests {
    /// Sends `value` as `$1::type`, reads it back, and returns what came back.
    func roundTrip<T: PostgresEncodable & PostgresDecodable>(
        _ value: T, as type: String, on client: PostgresClient
    ) async throws -> T {
        let rows = try await client.query("SELECT \(value)::\(unescaped: type) AS v")
        return try rows.scalar(T.self)
    }

    @Test func text() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let megabyte = String(repeating: "abcdefghij", count: 104_858)
            for value in ["", "plain", "héllo wörld 🌊 — 漢字", "quote ' double \" backslash \\ ", "--;/*", megabyte] {
                #expect(try await roundTrip(value, as: "text", on: client) == value)
            }
            let nullText: String? = nil
            #expect(try await roundTrip(nullText, as: "text", on: client) == nil)
        }
    }

    @Test func booleansAndIntegers() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            #expect(try await roundTrip(true, as: "bool", on: client) == true)
            #expect(try await roundTrip(false, as: "bool", on: client) == false)
            for value in [Int16.min, 0, Int16.max] { #expect(try await roundTrip(value, as: "int2", on: client) == value) }
            for value in [Int32.min, -1, Int32.max] { #expect(try await roundTrip(value, as: "int4", on: client) == value) }
            for value in [Int64.min, 42, Int64.max] { #expect(try await roundTrip(value, as: "int8", on: client) == value) }
            for value in [Int.min, 0, Int.max] { #expect(try await roundTrip(value, as: "int8", on: client) == value) }
            let none: Int? = nil
            #expect(try await roundTrip(none, as: "int8", on: client) == nil)
            let noBool: Bool? = nil
            #expect(try await roundTrip(noBool, as: "bool", on: client) == nil)
        }
    }

    @Test func floatingPointAndNumeric() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            for value in [0.1, -2.5e-300, 1.7976931348623157e308, .infinity, -.infinity, 3.141592653589793] {
                #expect(try await roundTrip(value, as: "float8", on: client) == value)
            }
            #expect(try await roundTrip(Double.nan, as: "float8", on: client).isNaN)
            for value: Float in [0.1, -3.4028235e38, .infinity] {
                #expect(try await roundTrip(value, as: "float4", on: client) == value)
            }
            for text in ["0", "-12.50", "12345678901234567890.123456789", "0.000000000000000000001"] {
                let value = Decimal(string: text, locale: Locale(identifier: "en_US_POSIX"))!
                #expect(try await roundTrip(value, as: "numeric", on: client) == value)
            }
            #expect(try await roundTrip(Decimal.nan, as: "numeric", on: client).isNaN)
            // Numeric text is exact even beyond Decimal's 38 digits.
            let big = try await client.query("SELECT (10::numeric ^ 60 + 1)::numeric(80,0)::text").scalar(String.self)
            #expect(big == "1" + String(repeating: "0", count: 59) + "1")
        }
    }

    @Test func timestampsAndDates() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let micro = Date(timeIntervalSince1970: 1_764_000_000.123456)
            let back = try await roundTrip(micro, as: "timestamptz", on: client)
            #expect(abs(back.timeIntervalSince1970 - micro.timeIntervalSince1970) < 0.000_001)
            for value in [
                Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: -86_400 * 365 * 100 - 0.5),
                Date(timeIntervalSince1970: 253_402_300_799),
            ] {
                #expect(try await roundTrip(value, as: "timestamptz", on: client) == value)
            }
            // Another session time zone does not change the instant.
            let instant = try await client.withConnection { (connection) async throws in
                try await connection.execute("SET TimeZone TO 'Asia/Kolkata'")
                return try await connection.query("SELECT '2026-11-25 10:00:00+00'::timestamptz").scalar(Date.self)
            }
            #expect(instant == Date(timeIntervalSince1970: 1_795_600_800))
            let day = try await client.query("SELECT DATE '2024-02-29'").scalar(Date.self)
            #expect(day == Date(timeIntervalSince1970: 1_709_164_800))
            let infinite = try await client.query("SELECT 'infinity'::timestamptz").scalar(Date.self)
            #expect(infinite == .distantFuture)
            let none: Date? = nil
            #expect(try await roundTrip(none, as: "timestamptz", on: client) == nil)
        }
    }

    @Test func uuidJSONAndBytea() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let id = UUID()
            #expect(try await roundTrip(id, as: "uuid", on: client) == id)
            let json = try PostgresJSON(encoding: ["name": "Zoë \"Z\"", "emoji": "🌊", "empty": ""])
            let jsonb = try await roundTrip(json, as: "jsonb", on: client)
            #expect(try jsonb.decode([String: String].self) == ["name": "Zoë \"Z\"", "emoji": "🌊", "empty": ""])
            let raw = #"{"b":1, "a":[true,null]}"#
            let plain = try await client.query("SELECT \(raw)::json").scalar(PostgresJSON.self)
            #expect(plain.text == raw)  // json keeps the text as sent; jsonb normalizes it
            let allBytes = Data((0...255).map { UInt8($0) })
            #expect(try await roundTrip(allBytes, as: "bytea", on: client) == allBytes)
            #expect(try await roundTrip(Data(), as: "bytea", on: client) == Data())
            let megabyte = Data((0..<1_048_576).map { UInt8(truncatingIfNeeded: $0 &* 31) })
            #expect(try await roundTrip(megabyte, as: "bytea", on: client) == megabyte)
            let none: UUID? = nil
            #expect(try await roundTrip(none, as: "uuid", on: client) == nil)
            let noJSON: PostgresJSON? = nil
            #expect(try await roundTrip(noJSON, as: "jsonb", on: client) == nil)
            let noBytes: Data? = nil
            #expect(try await roundTrip(noBytes, as: "bytea", on: client) == nil)
        }
    }

    @Test func textArrays() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let values = ["", "plain", "with,comma", "with \"quotes\"", "back\\slash", "NULL", "{braces}", "space d", "🌊"]
            #expect(try await roundTrip(values, as: "text[]", on: client) == values)
            #expect(try await roundTrip([String](), as: "text[]", on: client) == [])
            let withNull: [String?] = ["a", nil, "NULL"]
            #expect(try await roundTrip(withNull, as: "text[]", on: client) == withNull)
            #expect(try await roundTrip([1, -2, Int.max], as: "int8[]", on: client) == [1, -2, Int.max])
            let fromServer = try await client.query("SELECT ARRAY['x', NULL, 'y z']::text[]").scalar([String?].self)
            #expect(fromServer == ["x", nil, "y z"])
            let none: [String]? = nil
            #expect(try await roundTrip(none, as: "text[]", on: client) == nil)
        }
    }

    @Test func tablesRoundTripEveryTypeWithNulls() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.execute(
                """
                CREATE TABLE everything (
                    id int PRIMARY KEY, t text, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric,
                    ts timestamptz, d date, u uuid, j jsonb, js json, by bytea, ta text[])
                """)
            let when = Date(timeIntervalSince1970: 1_700_000_000.5)
            try await client.execute(
                """
                INSERT INTO everything VALUES (1, \("ü"), \(true), \(Int16(2)), \(Int32(4)), \(8), \(Float(0.5)), \(0.25),
                    \(Decimal(string: "1.5")!), \(when), \("2024-01-31"), \(UUID(uuidString: "6ba7b810-9dad-11d1-80b4-00c04fd430c8")!),
                    \(PostgresJSON(text: "{\"a\":1}")), \(PostgresJSON(text: "[1]")), \(Data([0, 1])), \(["x", "y"]))
                """)
            try await client.execute("INSERT INTO everything (id) VALUES (2)")
            let rows = try await client.query("SELECT * FROM everything ORDER BY id")
            let full = rows[0]
            #expect(try full["t"].decode(String.self) == "ü")
            #expect(try full["i2"].decode(Int16.self) == 2)
            #expect(try full["n"].decode(Decimal.self) == Decimal(string: "1.5"))
            #expect(try full["ts"].decode(Date.self) == when)
            #expect(try full["d"].decode(Date.self) == Date(timeIntervalSince1970: 1_706_659_200))
            #expect(try full["j"].decode(PostgresJSON.self).text == #"{"a": 1}"#)
            #expect(try full["by"].decode(Data.self) == Data([0, 1]))
            #expect(try full["ta"].decode([String].self) == ["x", "y"])
            let empty = rows[1]
            for column in empty.columns.map(\.name) where column != "id" {
                #expect(empty[column].isNull, "column \(column) should be NULL")
                #expect(try empty[column].decode(String?.self) == nil)
            }
            #expect(
                rows.columns.map(\.type) == [
                    .int4, .text, .bool, .int2, .int4, .int8, .float4, .float8, .numeric, .timestamptz, .date, .uuid, .jsonb,
                    .json, .bytea, .textArray,
                ])
        }
    }

    @Test func decodingErrorsNameTheColumn() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let rows = try await client.query("SELECT NULL::int AS missing, 'abc'::text AS word")
            #expect(throws: PostgresError.self) { try rows[0]["missing"].decode(Int.self) }
            do {
                _ = try rows[0]["word"].decode(Int.self)
                Issue.record("decoding text as Int should fail")
            } catch let error as PostgresError {
                #expect(error.kind == .decoding)
                #expect(error.message.contains("'word'") && error.message.contains("text"))
            }
            do {
                _ = try rows[0]["nope"].decode(String?.self)
                Issue.record("a missing column should fail")
            } catch let error as PostgresError {
                #expect(error.message.contains("no column 'nope'") && error.message.contains("missing, word"))
            }
        }
    }

    @Test func nulByteIsRefusedBeforeReachingTheServer() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            do {
                try await client.query("SELECT \("a\u{0}b")::text")
                Issue.record("a NUL byte must be refused")
            } catch let error as PostgresError {
                #expect(error.kind == .encoding)
                #expect(error.message.contains("NUL"))
            }
        }
    }
}
