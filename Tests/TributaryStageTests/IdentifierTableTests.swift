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
}
