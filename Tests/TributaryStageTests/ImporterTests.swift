import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryService
@testable import TributaryModel

@Suite struct ImporterTests {
    @Test func csvRecordsSurviveAnyChunking() {
        let text = "a,b,c\r\n1,\"x, \"\"y\"\"\",3\n2,\"multi\nline\",\n\n4,,\"\"\n5,last"
        var whole = CSVReader()
        let expected = whole.feed(Array(text.utf8), final: true)
        #expect(
            expected.map(\.fields) == [
                ["a", "b", "c"], ["1", "x, \"y\"", "3"], ["2", "multi\nline", ""], ["4", "", ""], ["5", "last"],
            ])
        #expect(expected.map(\.line) == [1, 2, 3, 6, 7])
        var byteByByte = CSVReader()
        var records: [CSVReader.Record] = []
        for byte in text.utf8 { records += byteByByte.feed([byte], final: false) }
        records += byteByByte.feed([], final: true)
        #expect(records.map(\.fields) == expected.map(\.fields))
        #expect(records.map(\.line) == expected.map(\.line))
    }

    @Test func linesSplitAcrossChunks() {
        var splitter = LineSplitter()
        var lines: [(Int, [UInt8])] = []
        for chunk in ["{\"a\"", ":1}\r\n{\"b\":2}\n", "\n{\"c\"", ":3}"] {
            lines += splitter.feed(Array(chunk.utf8), final: false)
        }
        lines += splitter.feed([], final: true)
        #expect(lines.map(\.0) == [1, 2, 3, 4])
        #expect(lines.map { String(decoding: $0.1, as: UTF8.self) } == ["{\"a\":1}", "{\"b\":2}", "", "{\"c\":3}"])
    }

    @Test func mappingsAreCheckedUpFront() throws {
        #expect(throws: ImportError.self) { try Importer.CSVMapping.parseField("email") }
        #expect(throws: ImportError.self) { try Importer.CSVMapping.parseField("traits=Email") }
        #expect(throws: ImportError.self) { try Importer.CSVMapping.parseField("password=Pw") }
        #expect(try Importer.CSVMapping.parseField("traits.lifetime_value:number=LTV") == ("traits.lifetime_value:number", "LTV"))
    }

    @Test func importsAreIdempotentAndRejectLinesByNumber() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("import-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let csv = directory.appendingPathComponent("orders.csv")
        var text = "Customer,Total,When,Paid\n"
        for n in 1...5000 { text += "c\(n),\(n).50,2025-0\(n % 9 + 1)-15T10:00:00Z,\(n % 2 == 0)\n" }
        text += "c-bad,not-a-number,2025-01-01T00:00:00Z,true\n,1,2025-01-01T00:00:00Z,true\n"
        try text.write(to: csv, atomically: true, encoding: .utf8)
        let mapping = Importer.CSVMapping(
            type: .track, event: "Order Completed",
            fields: [
                ("userId", "Customer"), ("properties.total:number", "Total"), ("timestamp", "When"),
                ("properties.paid:bool", "Paid"),
            ])
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            let (source, _) = try await SourceStore(client: client).create(name: "pos")
            let importer = Importer(writer: EventWriter(client: client, logger: TestDatabase.logger), batchSize: 700)
            let first = try await importer.importFile(at: csv.path, format: .csv, mapping: mapping, source: source)
            #expect(first.rows == 5002 && first.stored == 5000 && first.rejectedCount == 2)
            #expect(first.rejected.map(\.index) == [5002, 5003])
            #expect(first.rejected[0].message == "'not-a-number' is not a number")
            let again = try await importer.importFile(at: csv.path, format: .csv, mapping: mapping, source: source)
            #expect(again.stored == 0 && again.duplicates == 5000)
            let row = try await client.query(
                """
                SELECT properties->>'total', properties->'paid', timestamp FROM cdp.events WHERE user_id = 'c42'
                """
            ).first!
            let (total, paid, when) = try row.decode((String, String, Date).self)
            #expect(total == "42.50" && paid == "true")
            #expect(when == Date(timeIntervalSince1970: 1_752_573_600))  // 2025-07-15T10:00:00Z
        }
    }
}
