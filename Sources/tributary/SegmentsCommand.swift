import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryModel
import TributarySegments
import TributarySyncs

extension TributaryCommand {
    struct Segments: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Segments: compile definitions (JSON) to views segments.\"name\", list them with sizes, show and preview them.",
            subcommands: [Apply.self, List.self, Show.self, Preview.self, Refresh.self])
    }
}

extension TributaryCommand.Segments {
    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Validate a segments file, (re)create the views of new and changed segments, drop removed ones, refresh members.",
            discussion: """
                The file is the whole set of segments in force: a segment missing from it is removed (its members are \
                recorded as exited). Traits and event properties are checked against the applied catalog, computed traits \
                against the applied definitions.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The segments file (JSON).") var file: String
        @Flag(help: "Validate and print, per segment, the SQL diff and the size change; change nothing.") var dryRun = false

        func run() async throws {
            let data = try readDefinitionsFile(file)
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let store = SegmentStore(client: client, logger: logger)
                let definitions: SegmentDefinitions
                do { definitions = try await store.load(data) } catch let error as ProfileError {
                    throw CLIError("\(file): \(error)")
                }
                if dryRun {
                    try await printPlan(try await store.plan(definitions), store)
                    return
                }
                let changes = try await store.apply(definitions)
                let refreshed = changes.filter { $0.kind == .added || $0.kind == .changed }.map(\.name)
                let report = try await SegmentMembership(client: client, logger: logger).refresh(refreshed)
                let counts = Dictionary(grouping: changes, by: \.kind).mapValues(\.count)
                try await recordAudit(
                    client, "segments.apply", target: file,
                    details: [
                        "segments": .number(String(definitions.segments.count)), "added": .number(String(counts[.added] ?? 0)),
                        "changed": .number(String(counts[.changed] ?? 0)), "removed": .number(String(counts[.removed] ?? 0)),
                    ])
                print(
                    "segments: \(definitions.segments.count) in force; \(counts[.added] ?? 0) added, \(counts[.changed] ?? 0) changed, "
                        + "\(counts[.removed] ?? 0) removed, \(counts[.unchanged] ?? 0) unchanged; "
                        + "members refreshed: \(report.entered) entered, \(report.exited) exited")
            }
        }

        private func printPlan(_ changes: [SegmentStore.Change], _ store: SegmentStore) async throws {
            for change in changes {
                let before = try await change.oldSQL.asyncMap { try await store.count(sql: $0) }
                let after = try await change.newSQL.asyncMap { try await store.count(sql: $0) }
                let size: String
                switch (before, after) {
                case (let old?, let new?):
                    size = old == new ? "\(new) profiles" : "\(old) → \(new) profiles (\(new - old > 0 ? "+" : "")\(new - old))"
                case (nil, let new?): size = "\(new) profiles"
                case (let old?, nil): size = "\(old) profiles leave"
                default: size = ""
                }
                let stored = change.members.map { "; \($0) members stored" } ?? ""
                print("\(change.kind.rawValue) \(quoted(change.name)): \(size)\(stored)")
                if change.kind != .unchanged {
                    for line in LineDiff.diff(change.oldSQL ?? "", change.newSQL ?? "") { print("    \(line)") }
                }
            }
            print("dry run: nothing was changed")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the segments in force with their sizes (members at the last refresh).")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let logger = global.makeLogger()
            let segments = try await global.withMigratedClient(logger: logger) { client in
                try await SegmentStore(client: client, logger: logger).list()
            }
            if segments.isEmpty {
                print("no segments (tributary segments apply FILE defines them)")
                return
            }
            let width = segments.map { quoted($0.name).count }.max() ?? 0
            for segment in segments {
                let name = quoted(segment.name).padding(toLength: width, withPad: " ", startingAt: 0)
                let refreshed =
                    segment.refreshedAt.map { "refreshed \($0.formatted(.iso8601)) in \(segment.refreshMilliseconds ?? 0) ms" }
                    ?? "never refreshed"
                print(
                    "\(name)  \(String(segment.members).leftPadded(to: 9)) members  \(segment.realtime ? "real-time" : "scheduled")  \(refreshed)"
                        + (segment.description.map { "  — \($0)" } ?? ""))
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a segment's definition (JSON), or with --sql the SQL it compiles to.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The segment's name.") var name: String
        @Flag(help: "Print the view and the per-profile query instead of the definition.") var sql = false

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let store = SegmentStore(client: client, logger: logger)
                if sql {
                    let (view, perProfile) = try await store.sql(name)
                    print(
                        "-- The view (set-based):\n\(view);\n\n-- The per-profile form (the profiles to check are an array; shown empty):\n\(perProfile);"
                    )
                } else {
                    guard let segment = try await store.current()[name] else {
                        throw CLIError("no segment named \(quoted(name)) (tributary segments list shows them)")
                    }
                    print(String(decoding: try SegmentDefinitions([segment]).encoded(), as: UTF8.self), terminator: "")
                }
            }
        }
    }

    struct Preview: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Print a sample of a segment's members now (its view's columns and traits, one JSON object per line) and its size."
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The segment's name.") var name: String
        @Option(help: "Members to print.") var limit = 10

        func validate() throws {
            if limit < 0 { throw ValidationError("--limit must not be negative") }
        }

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let (rows, total) = try await SegmentStore(client: client, logger: logger).preview(name, limit: limit)
                for row in rows { print(row) }
                print("\(quoted(name)): \(total) profiles now\(rows.count < total ? " (\(rows.count) shown)" : "")")
            }
        }
    }

    struct Refresh: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Refresh the members of segments now (all, or the ones named), recording entries and exits.",
            discussion: "tributary serve does this on a schedule (--refresh-segments-every).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Segments to refresh (default: all).") var names: [String] = []

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                if !names.isEmpty {
                    let known = Set(try await SegmentStore(client: client, logger: logger).list().map(\.name))
                    if let unknown = names.first(where: { !known.contains($0) }) {
                        throw CLIError("no segment named \(quoted(unknown)) (tributary segments list shows them)")
                    }
                }
                let started = ContinuousClock.now
                let report = try await SegmentMembership(client: client, logger: logger).refresh(names.isEmpty ? nil : names)
                print(
                    "segments: \(report.segments) refreshed in \(ContinuousClock.now - started); \(report.entered) entered, "
                        + "\(report.exited) exited, \(report.members) members")
            }
        }
    }
}

/// A segment name as the user can type it back.
private func quoted(_ name: String) -> String {
    name.unicodeScalars.allSatisfy { $0.properties.isAlphabetic || $0 == "_" || ("0"..."9").contains($0) || $0 == "-" }
        ? name : (try? JSONEncoder().encode(name)).map { String(decoding: $0, as: UTF8.self) } ?? "\"\(name)\""
}

extension Optional {
    fileprivate func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
