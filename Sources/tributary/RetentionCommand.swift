import ArgumentParser
import Foundation
import Postgres
import TributaryCollection
import TributaryGovernance
import TributaryIdentity
import TributaryModel
import TributarySegments
import TributaryService
import TributarySyncs

extension TributaryCommand {
    struct RetentionGroup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "retention",
            abstract: "Event retention: drop monthly partitions of cdp.events older than a configured age.",
            subcommands: [SetAge.self, Show.self, Apply.self])
    }
}

extension TributaryCommand.RetentionGroup {
    struct SetAge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Set how long events are kept: 13months, 400d, 2y, or off (forever).",
            discussion: "Nothing is dropped until `tributary retention apply` runs (the worker runs it once a day).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "How long to keep events: a whole number of d, w, months or y (13months, 400d), or off.") var events: String

        func run() async throws {
            let age = events.lowercased() == "off" ? nil : try RetentionAge(parsing: events)
            let changed = try await global.withMigratedClient(logger: global.makeLogger()) { client in
                try await Retention(client: client).set(.init(events: age), actor: .cli)
            }
            let what = age.map { "events are kept for \($0)" } ?? "events are kept forever (retention off)"
            print(changed ? "retention: \(what)" : "retention: unchanged; \(what)")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the retention setting, the last run, and what a run would drop now.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await global.withMigratedClient(logger: global.makeLogger()) { client in
                let retention = Retention(client: client)
                let policy = try await retention.policy()
                print("events: \(policy.events.map { "kept for \($0)" } ?? "kept forever (retention off)")")
                print("last run: \(try await retention.lastRun()?.formatted(.iso8601) ?? "never")")
                for partition in try await retention.partitions() {
                    let range =
                        partition.from.flatMap { from in partition.to.map { "\(day(from)) … \(day($0))" } } ?? "never dropped"
                    print("  cdp.\(partition.name)  \(range)")
                }
                if let plan = try await retention.apply(dryRun: true, actor: .cli) { printPlan(plan) }
            }
        }
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Drop the partitions of cdp.events whose events are all older than the retention age; record it in the audit log."
        )
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print what would be dropped; change nothing.") var dryRun = false

        func run() async throws {
            let report = try await global.withMigratedClient(logger: global.makeLogger()) { client in
                try await Retention(client: client).apply(dryRun: dryRun, actor: .cli)
            }
            guard let report else {
                print("retention is off: nothing to drop; set it with `tributary retention set --events 13months`")
                return
            }
            printPlan(report)
        }
    }
}

private func day(_ date: Date) -> String { date.formatted(.iso8601.year().month().day()) }

private func count(_ n: some BinaryInteger, _ noun: String) -> String { n == 1 ? "1 \(noun)" : "\(n) \(noun)s" }

private func printPlan(_ report: Retention.Report) {
    let verb = report.dryRun ? "would drop" : "dropped"
    print(
        "retention: events older than \(report.olderThan) (before \(report.cutoff.formatted(.iso8601))): "
            + "\(verb) \(count(report.partitions.count, "partition")), \(count(report.events, "event")), \(count(report.messageIds, "message id"))"
    )
    for partition in report.partitions {
        print(
            "  \(verb) cdp.\(partition.name)  \(day(partition.from)) … \(day(partition.to))  \(count(partition.events, "event"))")
    }
    for name in report.skipped { print("  kept cdp.\(name): not a bounded monthly partition (retention never drops it)") }
    if report.dryRun { print("dry run: nothing was changed") }
}
