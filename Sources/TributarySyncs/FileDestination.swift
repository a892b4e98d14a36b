import Foundation
import TributaryCollection
import TributaryModel

/// Writes each run's changes to a file, JSON Lines or CSV, atomically: the run writes a temporary file next to the
/// target and renames it into place in ``finish()``, so a reader never sees half a file, and rows count as delivered
/// only once the file is there. A run with no change writes no file.
///
/// Settings: `path` (required; `{sync}`, `{run}` and `{timestamp}` are replaced, so each run can get its own file; a
/// path ending in `/` means `{sync}-{run}.jsonl` in that directory), `format` (`jsonl`, the default, or `csv`).
///
/// A JSON line: `{"op":"upsert","key":{"profile_id":"…"},"fields":{…},"idempotency_key":"…"}`. A CSV file has the
/// header `op,idempotency_key,<key columns>,<fields>` (taken from the first change) and RFC 4180 quoting; objects and
/// arrays are written as JSON.
public final class FileDestination: Destination, @unchecked Sendable {
    public enum Format: String, Sendable { case jsonl, csv }

    public let path: String
    public let format: Format
    let temporary: String
    private var handle: FileHandle?
    private var header: [String]?
    private let lock = NSLock()

    public var confirmsAtFinish: Bool { true }
    public var maxBatchSize: Int { 50_000 }

    public init(path: String, format: Format, runID: Int64) {
        self.path = path
        self.format = format
        self.temporary = path + ".tmp-\(runID)-\(ProcessInfo.processInfo.processIdentifier)"
    }

    public static func make(_ context: DestinationContext) throws -> FileDestination {
        try validate(context.settings)
        var path = try context.string("path")!
        if path.hasSuffix("/") { path += "{sync}-{run}.jsonl" }
        let stamp = Date().formatted(
            .iso8601.year().month().day().time(includingFractionalSeconds: false).timeSeparator(.omitted))
        path = path.replacingOccurrences(
            of: "{sync}",
            with: context.sync.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? String($0) : "_" }.joined()
        )
        .replacingOccurrences(of: "{run}", with: String(context.runID))
        .replacingOccurrences(of: "{timestamp}", with: stamp)
        let format =
            Format(rawValue: try context.string("format", required: false) ?? (path.hasSuffix(".csv") ? "csv" : "jsonl"))
            ?? .jsonl
        return FileDestination(path: path, format: format, runID: context.runID)
    }

    public static func validate(_ settings: JSONValue) throws {
        guard case .string(let path)? = settings["path"], !path.isEmpty else {
            throw SyncError("destination.path: required, a file path")
        }
        if case .string(let format)? = settings["format"], Format(rawValue: format) == nil {
            throw SyncError("destination.format: '\(format)' is not jsonl or csv")
        }
        if let unknown = settings.objectKeys.first(where: { !["type", "path", "format"].contains($0) }) {
            throw SyncError("destination.\(unknown): unknown setting for a file destination (path, format)")
        }
    }

    public func send(_ batch: [SyncChange]) async throws -> [ChangeResult] {
        try lock.withLock {
            if handle == nil {
                let directory = (path as NSString).deletingLastPathComponent
                if !directory.isEmpty {
                    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                }
                guard FileManager.default.createFile(atPath: temporary, contents: nil) else {
                    throw DestinationError("cannot create \(temporary)", retryable: false)
                }
                handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            }
            var out: [UInt8] = []
            for change in batch {
                switch format {
                case .jsonl:
                    JSONValue.object([
                        ("op", .string(change.operation.rawValue)), ("key", change.key), ("fields", change.fields),
                        ("idempotency_key", .string(change.idempotencyKey)),
                    ]).write(to: &out)
                    out.append(UInt8(ascii: "\n"))
                case .csv:
                    if header == nil {
                        header = change.key.objectKeys + change.fields.objectKeys.filter { !change.key.objectKeys.contains($0) }
                        out += Self.csvLine(["op", "idempotency_key"] + header!)
                    }
                    let values = header!.map { column in change.key[column] ?? change.fields[column] ?? .null }
                    out += Self.csvLine([change.operation.rawValue, change.idempotencyKey] + values.map(\.plainText))
                }
            }
            do { try handle!.write(contentsOf: out) } catch {
                throw DestinationError("writing \(temporary): \(error)", retryable: false)
            }
        }
        return Array(repeating: .delivered, count: batch.count)
    }

    public func finish() async throws {
        try lock.withLock {
            guard let handle else { return }
            try handle.synchronize()
            try handle.close()
            self.handle = nil
            if rename(temporary, path) != 0 {
                throw DestinationError(
                    "cannot move \(temporary) to \(path): \(String(cString: strerror(errno)))", retryable: false)
            }
        }
    }

    public func close() async {
        lock.withLock {
            try? handle?.close()
            handle = nil
            try? FileManager.default.removeItem(atPath: temporary)
        }
    }

    static func csvLine(_ fields: [String]) -> [UInt8] {
        let line =
            fields.map { field in
                field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" })
                    ? "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
                    : field
            }.joined(separator: ",") + "\r\n"
        return Array(line.utf8)
    }
}

extension JSONValue {
    /// The keys of an object in order (empty for anything else).
    public var objectKeys: [String] {
        guard case .object(let members) = self else { return [] }
        return members.map(\.0)
    }

    /// The members of an object in order (empty for anything else).
    public var objectMembers: [(String, JSONValue)] {
        guard case .object(let members) = self else { return [] }
        return members
    }
}
