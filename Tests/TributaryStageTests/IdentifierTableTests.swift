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
