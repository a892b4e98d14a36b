import ArgumentParser
import Foundation
import Postgres
import TributaryCollection
import TributaryModel
import TributarySyncs

extension TributaryCommand {
    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bulk import a JSONL file of Segment calls, or a CSV export with a column mapping.",
            discussion: """
                Streams the file (memory stays flat), is idempotent (rows get message ids from their content unless \
                messageId is given or mapped, so importing a file twice stores nothing new), and lists rejected lines \
                with their reason on standard error while storing the good ones.
                CSV example: tributary import customers.csv --source crm --type identify \
                --map userId=CustomerID --map traits.email=Email --map traits.lifetime_value:number=LTV
                """)
        @OptionGroup var global: GlobalOptions

        @Argument(help: "The file to import.") var file: String
        @Option(help: "The source the events belong to (see `tributary sources list`).") var source: String
        @Option(help: "jsonl or csv (default: from the file's extension).") var format: String?
        @Option(help: "CSV: the call each row becomes (identify, track, page, screen, group, alias).") var type: String?
        @Option(help: "CSV: the event name of track rows.") var event: String?
        @Option(name: .customLong("map"), help: "CSV: target=Column, for example userId=CustomerID or traits.email=Email.")
        var maps: [String] = []

        func run() async throws {
            let logger = global.makeLogger()
            let format = try resolvedFormat()
            var mapping: Importer.CSVMapping?
            if format == .csv {
                guard let typeName = type, let callType = CallType(rawValue: typeName) else {
                    throw CLIError(
                        "a CSV import needs --type, one of \(CallType.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                guard !maps.isEmpty else { throw CLIError("a CSV import needs at least one --map target=Column") }
                do {
                    mapping = Importer.CSVMapping(
                        type: callType, event: event, fields: try maps.map(Importer.CSVMapping.parseField))
                } catch let error as ImportError {
                    throw CLIError(error.description)
                }
            }
            guard FileManager.default.isReadableFile(atPath: file) else { throw CLIError("cannot read \(file)") }
            let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
            let report = try await global.withMigratedClient(logger: logger) { client in
                guard let found = try await SourceStore(client: client).named(source) else {
                    throw CLIError("there is no source named '\(source)'; create it with `tributary sources create \(source)`")
                }
                guard found.enabled else { throw CLIError("the source '\(source)' is disabled") }
                let progress = ProgressLine(total: size, label: (file as NSString).lastPathComponent)
                let importer = Importer(writer: EventWriter(client: client, logger: logger))
                do {
                    let report = try await importer.importFile(
                        at: file, format: format, mapping: mapping, source: found, progress: { progress.update($0) })
                    progress.finish()
                    return report
                } catch let error as ImportError {
                    progress.finish()
                    throw CLIError(error.description)
                }
            }
            for issue in report.rejected {
                let field = issue.field.isEmpty ? "" : "\(issue.field): "
                FileHandle.standardError.write(Data("rejected line \(issue.index ?? 0): \(field)\(issue.message)\n".utf8))
            }
            if report.rejectedCount > report.rejected.count {
                FileHandle.standardError.write(
                    Data("… and \(report.rejectedCount - report.rejected.count) more rejected lines\n".utf8))
            }
            print(
                "imported \(file) into source '\(source)': \(report.rows) rows read, \(report.stored) stored, "
                    + "\(report.duplicates) already stored, \(report.rejectedCount) rejected"
                    + (report.suppressed > 0 ? ", \(report.suppressed) dropped (suppressed identifiers of deleted people)" : ""))
        }

        func resolvedFormat() throws -> Importer.Format {
            if let format {
                guard let value = Importer.Format(rawValue: format.lowercased()) else {
                    throw CLIError("--format \(format): expected jsonl or csv")
                }
                return value
            }
            return file.lowercased().hasSuffix(".csv") ? .csv : .jsonl
        }
    }
}

/// A progress line on standard error, redrawn at most five times a second, only when it is a terminal.
final class ProgressLine: @unchecked Sendable {
    private let total: Int
    private let label: String
    private let enabled = isatty(2) == 1
    private let lock = NSLock()
    private var last = ContinuousClock.now - .seconds(1)
    private var drawn = false

    init(total: Int, label: String) {
        self.total = total
        self.label = label
    }

    func update(_ bytes: Int) {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        let now = ContinuousClock.now
        guard now - last > .milliseconds(200) else { return }
        last = now
        let fraction = total > 0 ? min(Double(bytes) / Double(total), 1) : 0
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        let line = String(
            format: "\r%@ %@ %3.0f%% (%.1f of %.1f MB)", label, bar, fraction * 100,
            Double(bytes) / 1e6, Double(total) / 1e6)
        FileHandle.standardError.write(Data(line.utf8))
        drawn = true
    }

    func finish() {
        lock.lock()
        defer { lock.unlock() }
        if drawn { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}
