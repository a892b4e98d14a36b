import Foundation
import Testing
@testable import TributaryIdentity
import TributaryModel

/// The rebuild's interner: every identifier found again after the table grew many times, kinds kept apart, any bytes.
@Suite struct IdentifierTableTests {
    @Test func internedIdentifiersAreFoundAgainAcrossGrowth() {
        var table = IdentifierTable()
        let kinds = ["email", "user_id", "anonymous_id"].map { table.kind(Array($0.utf8)) }
        var entries: [Identifier: Int32] = [:]
        for n in 0..<20_000 {
            let kind = kinds[n % 3]
            let value = n % 7 == 0 ? "é-\(n)-😀" : n % 11 == 0 ? "" : "value-\(n / 3)"
            let entry = table.intern(kind: kind, Array(value.utf8))
            let identifier = Identifier(kind: table.kindNames[Int(kind)], value: value)
            if let known = entries[identifier] { #expect(known == entry) } else { entries[identifier] = entry }
        }
        #expect(table.count == entries.count)
        for (identifier, entry) in entries {
            #expect(table.find(kind: identifier.kind, value: identifier.value) == entry)
            #expect(table.identifier(entry) == identifier)
        }
        // The same value under two kinds is two identifiers; an unknown kind or value finds nothing.
        #expect(table.find(kind: "email", value: "value-0") != table.find(kind: "user_id", value: "value-0"))
        #expect(table.find(kind: "phone", value: "value-0") == nil)
        #expect(table.find(kind: "email", value: "never-seen") == nil)
    }

    /// Values that are UUIDs in canonical lower-case text are stored as 16 bytes: found again, given back as the
    /// same text, ordered as the text orders, and never confused with the same UUID in capitals or with near misses.
    @Test func uuidValuesArePackedWithoutChangingWhatTheyAre() {
        var table = IdentifierTable()
        let anonymous = table.kind(Array("anonymous_id".utf8))
        var random = SystemRandomNumberGenerator()
        var values = (0..<2_000).map { _ in UUID().uuidString.lowercased() }
        values += ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]
        values += values.prefix(50).map { $0.uppercased() }  // not canonical: kept as text, a different identifier
        values += [
            "0795d419-460a-816a-87f5-0a92e6daf0cg", "0795d419x460a-816a-87f5-0a92e6daf0c9", "0795d419-460a-816a-87f5-0a92e6daf0c",
        ]
        values += ["anon-1", "0795d419-460a-816a-87f5-0a92e6daf0c9-", "z"]
        values.shuffle(using: &random)
        var entries: [String: Int32] = [:]
        for value in values + values.shuffled() {
            let entry = table.intern(kind: anonymous, Array(value.utf8))
            if let known = entries[value] { #expect(known == entry) } else { entries[value] = entry }
        }
        #expect(table.count == Set(values).count)
        for (value, entry) in entries {
            #expect(table.value(entry) == value)
            #expect(Array(table.valueBytes(entry)) == Array(value.utf8))
            #expect(table.find(kind: "anonymous_id", value: value) == entry)
        }
        let sorted = entries.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let byTable = entries.values.sorted { table.valuePrecedes($0, $1) }.map { table.value($0) }
        #expect(byTable == sorted)
        // The index dropped and rebuilt finds the same entries.
        table.releaseIndex()
        table.restoreIndex()
        for (value, entry) in entries { #expect(table.find(kind: "anonymous_id", value: value) == entry) }
    }

    /// UUIDs read from COPY's text without a `String`: both cases of hex, NULL, and the fields after each.
    @Test func uuidsParseFromCopyTextInPlace() {
        let text =
            "0795d419-460a-816a-87f5-0a92e6daf0c9\t7\n\\N\t8\n0795D419-460A-816A-87F5-0A92E6DAF0C9\n"
            + "not-a-uuid-at-all-but-36-characters!\t9\n"
        let bytes = Array(text.utf8)
        var index = 0
        let expected = UUID(uuidString: "0795d419-460a-816a-87f5-0a92e6daf0c9")
        #expect(IdentityRebuild.parseUUID(bytes, &index) == expected)
        #expect(IdentityRebuild.parseDecimal(bytes, &index) == 7)
        #expect(IdentityRebuild.parseUUID(bytes, &index) == nil)
        #expect(IdentityRebuild.parseDecimal(bytes, &index) == 8)
        #expect(IdentityRebuild.parseUUID(bytes, &index) == expected)
        #expect(IdentityRebuild.parseUUID(bytes, &index) == nil)
        #expect(IdentityRebuild.parseDecimal(bytes, &index) == 9)
        #expect(index == bytes.count)
        // A NULL with exactly 36 bytes left in the chunk (a crash of the first version, on the benchmark's data).
        let tail = Array(("\\N\t" + String(repeating: "x", count: 32) + "\n").utf8)
        var position = 0
        #expect(tail.count == 36)
        #expect(IdentityRebuild.parseUUID(tail, &position) == nil)
        #expect(position == 3)
    }
}
