import Foundation
import Logging
import Postgres
import TributaryModel

/// Bulk import of CRM and POS exports: JSONL of Segment calls, or CSV with a column mapping.
///
/// The file is read in chunks and written in batches through the same ``EventWriter`` as the HTTP API, so memory
/// stays flat whatever the file's size, and each row's message id is derived from its content (unless mapped), so
/// importing the same file twice stores nothing the second time. Rows that fail validation are reported with their
/// line number and left out; the others are stored.
public struct Importer: Sendable {
    public enum Format: String, Sendable, CaseIterable {
        case jsonl, csv
    }

    /// How CSV columns become a Segment call.
    public struct CSVMapping: Sendable {
        /// The call every row becomes.
        public var type: CallType
        /// The event name of `track` rows (or mapped with `event=Column`).
        public var event: String?
        /// Target field (`userId`, `traits.email`, `properties.revenue:number`, …) to CSV column name.
        public var fields: [(target: String, column: String)]

        public init(type: CallType, event: String? = nil, fields: [(target: String, column: String)]) {
            self.type = type
            self.event = event
            self.fields = fields
        }

        /// Parses `--map` arguments of the form `target=Column`.
        public static func parseField(_ text: String) throws -> (target: String, column: String) {
            guard let equals = text.firstIndex(of: "="), equals != text.startIndex, text.index(after: equals) != text.endIndex
            else {
                throw ImportError("--map \(text): expected target=Column, for example traits.email=Email")
            }
            let target = String(text[..<equals])
            let base = target.split(separator: ":").first.map(String.init) ?? target
            let topLevel = [
                "userId", "user_id", "anonymousId", "anonymous_id", "messageId", "message_id", "event", "name",
                "groupId", "group_id", "previousId", "previous_id", "timestamp",
            ]
            let nested = ["traits.", "properties.", "context."]
            guard topLevel.contains(base) || nested.contains(where: { base.hasPrefix($0) && base.count > $0.count }) else {
                throw ImportError(
                    "--map \(text): '\(base)' is not a field; use userId, anonymousId, messageId, event, name, groupId, "
                        + "previousId, timestamp, or traits.X, properties.X, context.X (add :number or :bool for typed values)")
            }
            return (target, String(text[text.index(after: equals)...]))
        }
    }

    /// What an import did.
    public struct Report: Sendable {
        public var rows = 0
        public var stored = 0
        public var duplicates = 0
        /// Rows dropped because they carry a suppressed identifier (a deleted person's).
        public var suppressed = 0
        public var rejected: [ValidationIssue] = []
        public var rejectedCount = 0
    }

    let writer: EventWriter
    let parser: SegmentParser
    let batchSize: Int
    /// Rejections kept in the report (all are counted).
    public static let maxListedRejections = 1000

    public init(writer: EventWriter, limits: CollectionLimits = CollectionLimits(), batchSize: Int = 2000) {
        self.writer = writer
        self.parser = SegmentParser(limits: limits)
        self.batchSize = batchSize
    }

    /// Imports a file for a source; `progress` is called after each batch with the bytes read so far.
    public func importFile(
        at path: String, format: Format, mapping: CSVMapping?, source: Source,
        progress: @Sendable (Int) -> Void = { _ in }
    ) async throws -> Report {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw ImportError("cannot open \(path)") }
        defer { try? handle.close() }
        var report = Report()
        var batch: [IncomingEvent] = []
        var bytesRead = 0
        let receivedAt = Date()
        func reject(_ issue: ValidationIssue) {
            report.rejectedCount += 1
            if report.rejected.count < Self.maxListedRejections { report.rejected.append(issue) }
        }
        func flush() async throws {
            guard !batch.isEmpty else { return }
            let outcome = try await writer.write(batch, sourceID: source.id)
            report.stored += outcome.stored
            report.duplicates += outcome.duplicates
            report.suppressed += outcome.suppressed
            batch.removeAll(keepingCapacity: true)
            progress(bytesRead)
        }
        /// One row: validated into the batch, or rejected with its line number.
        func take(line: Int, _ makeCall: () throws -> JSONValue) async throws {
            report.rows += 1
            do {
                batch.append(try parser.call(makeCall(), index: line, receivedAt: receivedAt))
            } catch let issue as ValidationIssue {
                reject(issue)
            }
            if batch.count >= batchSize { try await flush() }
        }
        var csv = format == .csv ? CSVReader() : nil
        var header: [String]?
        var lines = LineSplitter()
        while true {
            let chunk = try handle.read(upToCount: 1 << 20) ?? Data()
            bytesRead += chunk.count
            let finished = chunk.isEmpty
            if var reader = csv {
                let records = reader.feed(Array(chunk), final: finished)
                csv = reader
                for record in records {
                    if header == nil {
                        header = record.fields
                        try Self.checkColumns(mapping, header: record.fields)
                        continue
                    }
                    try await take(line: record.line) {
                        try Self.object(record.fields, header: header!, mapping: mapping!, line: record.line)
                    }
                }
            } else {
                for (line, text) in lines.feed(Array(chunk), final: finished) where !text.allSatisfy({ $0 == 0x20 || $0 == 0x0D })
                {
                    try await take(line: line) {
                        do {
                            return Self.withMessageID(try JSONParser.parse(text), content: text)
                        } catch let error as JSONParseError {
                            throw ValidationIssue(index: line, field: "", message: error.description)
                        }
                    }
                }
            }
            if finished { break }
        }
        try await flush()
        if format == .csv && header == nil { throw ImportError("\(path) is empty: a CSV import needs a header row") }
        return report
    }

    /// A call without a messageId gets one derived from its content, so a re-import recognises it.
    static func withMessageID(_ value: JSONValue, content: [UInt8]) -> JSONValue {
        guard case .object(var members) = value, value["messageId"] == nil else { return value }
        members.append(("messageId", .string("import-" + digest(content))))
        return .object(members)
    }

    static func digest(_ bytes: [UInt8]) -> String {
        sha256Hex(bytes, bytes: 16)
    }

    static func checkColumns(_ mapping: CSVMapping?, header: [String]) throws {
        guard let mapping else { throw ImportError("a CSV import needs --type and at least one --map") }
        let missing = mapping.fields.map(\.column).filter { !header.contains($0) }
        if !missing.isEmpty {
            throw ImportError(
                "the CSV has no column named \(missing.map { "'\($0)'" }.joined(separator: ", ")); its columns are: "
                    + header.joined(separator: ", "))
        }
    }

    /// One CSV row as a Segment call.
    static func object(_ fields: [String], header: [String], mapping: CSVMapping, line: Int) throws -> JSONValue {
        var top: [(String, JSONValue)] = [("type", .string(mapping.type.rawValue))]
        if let event = mapping.event { top.append(("event", .string(event))) }
        var nested: [String: [(String, JSONValue)]] = [:]
        for (target, column) in mapping.fields {
            guard let index = header.firstIndex(of: column), index < fields.count else { continue }
            let raw = fields[index]
            if raw.isEmpty { continue }
            let parts = target.split(separator: ":", maxSplits: 1).map(String.init)
            let name = parts[0]
            var value = JSONValue.string(raw)
            if parts.count == 2 {
                switch parts[1] {
                case "number":
                    guard case .number(let text)? = try? JSONParser.parse(Array(raw.trimmingCharacters(in: .whitespaces).utf8))
                    else {
                        throw ValidationIssue(index: line, field: column, message: "'\(raw.prefix(40))' is not a number")
                    }
                    value = .number(text)
                case "bool":
                    guard ["true", "false", "1", "0", "yes", "no"].contains(raw.lowercased()) else {
                        throw ValidationIssue(index: line, field: column, message: "'\(raw.prefix(40))' is not true or false")
                    }
                    value = .bool(["true", "1", "yes"].contains(raw.lowercased()))
                default:
                    throw ValidationIssue(index: line, field: column, message: "unknown type :\(parts[1]) (use :number or :bool)")
                }
            }
            if let dot = name.firstIndex(of: ".") {
                nested[String(name[..<dot]), default: []].append((String(name[name.index(after: dot)...]), value))
            } else {
                let key =
                    [
                        "user_id": "userId", "anonymous_id": "anonymousId", "message_id": "messageId", "group_id": "groupId",
                        "previous_id": "previousId",
                    ][name] ?? name
                top.append((key, value))
            }
        }
        for (key, members) in nested.sorted(by: { $0.key < $1.key }) { top.append((key, .object(members))) }
        if !top.contains(where: { $0.0 == "messageId" }) {
            top.append(
                (
                    "messageId",
                    .string(
                        "import-"
                            + digest(
                                Array(fields.joined(separator: "\u{1F}").utf8)
                                    + Array(mapping.type.rawValue.utf8) + Array((mapping.event ?? "").utf8)))
                ))
        }
        return .object(top)
    }
}

/// A failure of an import as a whole, in one line.
public struct ImportError: ReportedError {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Splits a byte stream into lines (LF or CRLF), numbered from 1, across chunk boundaries.
package struct LineSplitter {
    private var carry: [UInt8] = []
    private var line = 0

    mutating func feed(_ chunk: [UInt8], final: Bool) -> [(Int, [UInt8])] {
        carry.append(contentsOf: chunk)
        var out: [(Int, [UInt8])] = []
        var start = 0
        while let newline = carry[start...].firstIndex(of: 0x0A) {
            line += 1
            var end = newline
            if end > start && carry[end - 1] == 0x0D { end -= 1 }
            out.append((line, Array(carry[start..<end])))
            start = newline + 1
        }
        carry.removeFirst(start)
        if final && !carry.isEmpty {
            line += 1
            out.append((line, carry))
            carry = []
        }
        return out
    }
}

/// An RFC 4180 CSV reader over a byte stream: quoted fields may hold commas, quotes ("") and newlines.
package struct CSVReader {
    struct Record {
        /// The line the record starts on, from 1.
        var line: Int
        var fields: [String]
    }

    private var field: [UInt8] = []
    private var fields: [String] = []
    private var quoted = false
    private var quoteSeen = false
    private var line = 1
    private var recordLine = 1

    mutating func feed(_ chunk: [UInt8], final: Bool) -> [Record] {
        var out: [Record] = []
        for byte in chunk {
            if quoted {
                if quoteSeen {
                    quoteSeen = false
                    if byte == 0x22 {
                        field.append(0x22)
                        continue
                    }
                    quoted = false
                } else if byte == 0x22 {
                    quoteSeen = true
                    continue
                } else {
                    if byte == 0x0A { line += 1 }
                    field.append(byte)
                    continue
                }
            }
            switch byte {
            case 0x22 where field.isEmpty:
                quoted = true
            case 0x2C:
                endField()
            case 0x0D:
                break
            case 0x0A:
                endField()
                if !(fields.count == 1 && fields[0].isEmpty) {
                    out.append(Record(line: recordLine, fields: fields))
                }
                fields = []
                line += 1
                recordLine = line
            default:
                field.append(byte)
            }
        }
        if final && (!field.isEmpty || !fields.isEmpty) {
            endField()
            out.append(Record(line: recordLine, fields: fields))
            fields = []
        }
        return out
    }

    private mutating func endField() {
        fields.append(String(decoding: field, as: UTF8.self))
        field = []
        quoted = false
        quoteSeen = false
    }
}
