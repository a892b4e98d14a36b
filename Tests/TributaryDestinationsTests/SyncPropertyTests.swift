import Foundation
import LocalReceiver
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryDestinations
import TributaryFixtures
@testable import TributaryGovernance
@testable import TributaryIdentity
@testable import TributaryModel
@testable import TributaryProfiles
@testable import TributarySegments
@testable import TributaryService
@testable import TributarySyncs

/// Property-based and fault-injection tests of the sync engine against real PostgreSQL and a real local HTTP
/// receiver (``TestReceiver``) whose model of the destination is kept by the test (``SyncPropertyTests/Model``).
///
/// Every random choice comes from a seeded generator: a failure message names the variant, seed and step, and the
/// log of source changes and runs that led to it, so the case replays exactly.
@Suite struct SyncPropertyTests {
    typealias F = SyncFixture

    // MARK: - Tools

    /// The fixtures' generator, its seed scrambled as these tests always did (so recorded failing seeds replay).
    static func scrambled(_ seed: UInt64) -> SeededRandom {
        SeededRandom(seed: seed &* 0x9E37_79B9_7F4A_7C15 ^ 0xD1B5_4A32_D192_ED03)
    }

    /// JSON text with object members sorted (jsonb's order and the receiver's order may differ).
    static func canon(_ value: JSONValue) -> String {
        switch value {
        case .object(let members):
            "{"
                + members.sorted { $0.0 < $1.0 }.map { "\(JSONValue.string($0.0).serialized):\(canon($0.1))" }.joined(
                    separator: ",") + "}"
        case .array(let items): "[" + items.map(canon).joined(separator: ",") + "]"
        default: value.serialized
        }
    }

    static func canon(_ text: String) -> String {
        (try? JSONParser.parse(Array(text.utf8))).map { canon($0) } ?? "<not JSON: \(text)>"
    }

    /// The destination as the receiver sees it: a key → fields map changed by each idempotency key once (upsert and
    /// add set the row, delete and remove drop it), the log of every change received, and of the changes whose
    /// request was answered with a prompt 2xx (so the runner saw the confirmation).
    final class Model: @unchecked Sendable {
        struct Delivery: Hashable, Sendable {
            var runID: String
            var op: String
            var key: String
            var fields: String
            var idempotencyKey: String
            /// What a row of `cdp.sync_state` must match: the run that confirmed it, the operation, key and fields.
            var stateKey: String { "\(runID)|\(op)|\(key)|\(fields)" }
        }

        private let lock = NSLock()
        private var _rows: [String: String] = [:]
        private var applied = Set<String>()
        private var _received: [Delivery] = []
        private var _confirmed: [Delivery] = []
        private var _requests = 0

        var rows: [String: String] { lock.withLock { _rows } }
        var received: [Delivery] { lock.withLock { _received } }
        var confirmed: [Delivery] { lock.withLock { _confirmed } }
        var requests: Int { lock.withLock { _requests } }

        /// Records a request's changes; applies them when `apply` (a change already applied is skipped: the receiver
        /// is idempotent by `idempotency_key`); `confirmed`: the answer reaches the runner as a success.
        @discardableResult
        func take(_ request: TestReceiver.Request, apply: Bool, confirmed: Bool) -> [Delivery] {
            guard let body = try? JSONParser.parse(request.body), case .array(let changes)? = body["changes"] else { return [] }
            let runID: String = if case .number(let text)? = body["run_id"] { text } else { "?" }
            let deliveries = changes.map { change in
                Delivery(
                    runID: runID,
                    op: { if case .string(let op)? = change["op"] { op } else { "?" } }(),
                    key: change["key"].map { SyncPropertyTests.canon($0) } ?? "?",
                    fields: change["fields"].map { SyncPropertyTests.canon($0) } ?? "?",
                    idempotencyKey: { if case .string(let key)? = change["idempotency_key"] { key } else { "?" } }())
            }
            lock.withLock {
                _requests += 1
                _received += deliveries
                if confirmed { _confirmed += deliveries }
                guard apply else { return }
                for delivery in deliveries where applied.insert(delivery.idempotencyKey).inserted {
                    switch delivery.op {
                    case "delete", "remove": _rows.removeValue(forKey: delivery.key)
                    default: _rows[delivery.key] = delivery.fields
                    }
                }
            }
            return deliveries
        }
    }

    /// Random changes to `public.customers (id, email, plan, score)`: inserts, updates of the mapped columns (email,
    /// plan) and of the unmapped one (score), deletes, re-inserts of deleted keys, no-ops. Values come from small
    /// sets (NULL included) so rows often go back to earlier states.
    struct Mutator {
        var rng: SeededRandom
        var graveyard: [String: (String?, String?, Int)] = [:]
        static let pool = (1...14).map { String(format: "c%02d", $0) }
        static let emails: [String?] = ["a@example.com", "b@example.com", "c@example.com", nil]
        static let plans: [String?] = ["free", "pro", "team", nil]

        init(seed: UInt64) { rng = SyncPropertyTests.scrambled(seed) }

        mutating func pick<T>(_ items: [T]) -> T { items[Int.random(in: 0..<items.count, using: &rng)] }

        static func show(_ value: String?) -> String { value ?? "NULL" }

        /// Inserts `count` rows with random values and keys never used before.
        mutating func populate(_ client: PostgresClient, _ count: Int) async throws -> [String] {
            var done: [String] = []
            for _ in 0..<count {
                let present = try await client.query("SELECT id FROM public.customers").map { try $0.decode(String.self) }
                let fresh = Self.pool.filter { !present.contains($0) && graveyard[$0] == nil }
                guard !fresh.isEmpty else { break }
                let (id, email, plan, score) = (
                    pick(fresh), pick(Self.emails), pick(Self.plans), Int.random(in: 0...9, using: &rng)
                )
                try await client.execute("INSERT INTO public.customers VALUES (\(id), \(email), \(plan), \(score))")
                done.append("insert \(id) \(Self.show(email)) \(Self.show(plan)) \(score)")
            }
            return done
        }

        /// Applies one random change; returns what it did.
        mutating func mutate(_ client: PostgresClient) async throws -> String {
            let rows = try await client.query("SELECT id, email, plan, score FROM public.customers ORDER BY id")
                .map { try $0.decode((String, String?, String?, Int).self) }
            let present = rows.map(\.0)
            let roll = Int.random(in: 0..<100, using: &rng)
            let fresh = Self.pool.filter { !present.contains($0) && graveyard[$0] == nil }
            if roll < 22 || present.isEmpty, !fresh.isEmpty {
                let (id, email, plan, score) = (
                    pick(fresh), pick(Self.emails), pick(Self.plans), Int.random(in: 0...9, using: &rng)
                )
                try await client.execute("INSERT INTO public.customers VALUES (\(id), \(email), \(plan), \(score))")
                return "insert \(id) \(Self.show(email)) \(Self.show(plan)) \(score)"
            }
            if roll < 72, !graveyard.isEmpty, roll >= 58 || present.isEmpty {
                let id = pick(graveyard.keys.sorted())
                var (email, plan, score) = graveyard.removeValue(forKey: id)!
                let same = Bool.random(using: &rng)
                if !same { plan = pick(Self.plans) }
                if Bool.random(using: &rng) { score += 1 }
                try await client.execute("INSERT INTO public.customers VALUES (\(id), \(email), \(plan), \(score))")
                return "re-insert \(id) \(Self.show(email)) \(Self.show(plan)) \(score)\(same ? " (as deleted)" : "")"
            }
            guard !present.isEmpty else { return "no-op (empty)" }
            let row = pick(rows)
            switch roll {
            case ..<40:
                if Bool.random(using: &rng) {
                    let email = pick(Self.emails)
                    try await client.execute("UPDATE public.customers SET email = \(email) WHERE id = \(row.0)")
                    return "update \(row.0) email \(Self.show(row.1)) → \(Self.show(email))"
                }
                let plan = pick(Self.plans)
                try await client.execute("UPDATE public.customers SET plan = \(plan) WHERE id = \(row.0)")
                return "update \(row.0) plan \(Self.show(row.2)) → \(Self.show(plan))"
            case ..<50:
                try await client.execute("UPDATE public.customers SET score = score + 1 WHERE id = \(row.0)")
                return "update \(row.0) score (unmapped)"
            case ..<72:
                try await client.execute("DELETE FROM public.customers WHERE id = \(row.0)")
                graveyard[row.0] = (row.1, row.2, row.3)
                return "delete \(row.0)"
            default:
                return "no-op"
            }
        }
    }

    /// `key → fields` (canonical JSON) from a query returning the two as jsonb text.
    static func keyed(_ client: PostgresClient, _ sql: String) async throws -> [String: String] {
        var model: [String: String] = [:]
        for row in try await client.query(PostgresQuery(unsafeSQL: sql)) {
            let (key, fields) = try row.decode((String, String).self)
            model[canon(key)] = canon(fields)
        }
        return model
    }

    static let mirrorSQL =
        "SELECT jsonb_build_object('id', id)::text, jsonb_build_object('mail', email, 'tier', plan)::text FROM public.customers"
    static let audienceSQL = """
        SELECT jsonb_build_object('id', id)::text, jsonb_build_object('mail', email)::text FROM public.customers
        WHERE plan IS DISTINCT FROM 'free'
        """
    static func stateSQL(_ sync: String) -> String {
        "SELECT key_object::text, payload::text FROM cdp.sync_state WHERE sync = '\(sync)' AND NOT removed"
    }

    /// What differs between two models, for failure messages.
    static func difference(expected: [String: String], actual: [String: String]) -> String {
        var lines: [String] = []
        for key in Set(expected.keys).union(actual.keys).sorted() where expected[key] != actual[key] {
            lines.append("  \(key): expected \(expected[key] ?? "(absent)"), got \(actual[key] ?? "(absent)")")
        }
        return lines.isEmpty ? "  (same)" : lines.joined(separator: "\n")
    }

    static func lastRunID(_ client: PostgresClient) async throws -> Int64 {
        try await client.query("SELECT coalesce(max(run_id), 0)::bigint FROM cdp.sync_runs").first![0].decode(Int64.self)
    }

    /// Rows of `cdp.sync_state` with no matching confirmed delivery: same run, operation, key and fields.
    static func unconfirmedState(_ client: PostgresClient, _ model: Model, sync: String) async throws -> [String] {
        let confirmed = Set(model.confirmed.map(\.stateKey))
        return try await client.query(
            """
            SELECT run_id, removed, key_object::text, payload::text FROM cdp.sync_state WHERE sync = \(sync) ORDER BY key
            """
        ).compactMap { row in
            let (run, removed, key, payload) = try row.decode((Int64, Bool, String, String).self)
            let expected = "\(run)|\(removed ? "delete" : "upsert")|\(canon(key))|\(canon(payload))"
            return confirmed.contains(expected) ? nil : expected
        }
    }

    /// Idempotency keys received more than once.
    static func repeatedKeys(_ model: Model) -> [String] {
        var seen = Set<String>(), repeated: [String] = []
        for delivery in model.received where !seen.insert(delivery.idempotencyKey).inserted {
            repeated.append("\(delivery.op) \(delivery.key) \(delivery.idempotencyKey) (run \(delivery.runID))")
        }
        return repeated
    }

    static func webhook(_ base: String, timeout: String? = nil) -> String {
        #"{"type": "webhook", "url": "\#(base)/hook"\#(timeout.map { #", "timeoutSeconds": \#($0)"# } ?? "")}"#
    }

    // MARK: - 1. Destination equals source after each successful run

    enum Variant: String, CaseIterable, Sendable {
        case mirrorWebhook, mirrorTable, upsertWebhook, audienceWebhook

        func definition(base: String, batchSize: Int) -> String {
            let (mode, source, fields, destination): (String, String, String, String) =
                switch self {
                case .mirrorWebhook:
                    (
                        "mirror", #"{"relation": "public.customers"}"#, #"{"mail": "email", "tier": "plan"}"#,
                        SyncPropertyTests.webhook(base)
                    )
                case .mirrorTable:
                    (
                        "mirror", #"{"relation": "public.customers"}"#, #"{"mail": "email", "tier": "plan"}"#,
                        #"{"type": "postgres", "table": "crm.contacts"}"#
                    )
                case .upsertWebhook:
                    (
                        "upsert", #"{"query": "SELECT id, email, plan FROM public.customers"}"#,
                        #"{"mail": "email", "tier": "plan"}"#, SyncPropertyTests.webhook(base)
                    )
                case .audienceWebhook:
                    (
                        "audience", #"{"query": "SELECT id, email FROM public.customers WHERE plan IS DISTINCT FROM 'free'"}"#,
                        #"{"mail": "email"}"#,
                        SyncPropertyTests.webhook(base)
                    )
                }
            return """
                {"syncs": [{"name": "prop", "source": \(source), "primaryKey": ["id"], "fields": \(fields), "mode": "\(mode)",
                  "batchSize": \(batchSize), "destination": \(destination)}]}
                """
        }
    }

    @Test(.timeLimit(.minutes(6)), arguments: Variant.allCases)
    func destinationEqualsSourceAfterEverySuccessfulRun(_ variant: Variant) async throws {
        for seed in UInt64(1)...5 {
            let model = Model()
            let receiver = TestReceiver {
                model.take($0, apply: true, confirmed: true); return .init()
            }
            try await receiver.serve { base in
                try await TestDatabase.withFreshDatabase { (client) async throws in
                    try await F.migrated(client)
                    try await F.customers(client, [])
                    if variant == .mirrorTable {
                        try await client.execute("CREATE SCHEMA crm")
                        // Odd seeds: an existing table with typed columns; even seeds: created from the first batch (jsonb fields).
                        if seed % 2 == 1 {
                            try await client.execute("CREATE TABLE crm.contacts (id text PRIMARY KEY, mail text, tier text)")
                        }
                    }
                    var rng = SyncPropertyTests.scrambled(seed &* 1_000_003 &+ UInt64(Variant.allCases.firstIndex(of: variant)!))
                    var mutator = Mutator(seed: seed)
                    let runner = F.runner(client)
                    var union: [String: String] = [:]
                    var log: [String] = []
                    log += try await mutator.populate(client, 6).map { "  " + $0 }
                    for step in 1...15 {
                        for _ in 0..<Int.random(in: 0...4, using: &rng) { log.append("  " + (try await mutator.mutate(client))) }
                        guard step == 15 || Int.random(in: 0..<10, using: &rng) < 7 else { continue }
                        let batchSize = Int.random(in: 1...7, using: &rng)
                        try await F.apply(variant.definition(base: base, batchSize: batchSize), client)
                        let report = try await runner.run("prop")
                        log.append(
                            "run \(report.runID) (batch \(batchSize)): \(report.status) +\(report.added) ~\(report.changed) -\(report.removed) delivered \(report.delivered)"
                        )
                        let context = "\(variant) seed \(seed) step \(step):\n\(log.joined(separator: "\n"))"
                        #expect(report.status == .succeeded, "\(context)\n\(report)")
                        guard report.status == .succeeded else { return }

                        var expected = try await Self.keyed(
                            client, variant == .audienceWebhook ? Self.audienceSQL : Self.mirrorSQL)
                        if variant == .upsertWebhook {
                            // Upsert keeps rows that left the source, with the fields last sent.
                            union.merge(expected) { $1 }
                            expected = union
                        }
                        let destination: [String: String]
                        if variant == .mirrorTable {
                            let exists = try await client.query("SELECT to_regclass('crm.contacts') IS NOT NULL").first![0]
                                .decode(Bool.self)
                            destination =
                                exists
                                ? try await Self.keyed(
                                    client,
                                    """
                                    SELECT jsonb_build_object('id', id)::text, jsonb_build_object('mail', mail, 'tier', tier)::text FROM crm.contacts
                                    """) : [:]
                        } else {
                            destination = model.rows
                        }
                        #expect(
                            destination == expected,
                            "destination ≠ source model: \(context)\n\(Self.difference(expected: expected, actual: destination))")
                        if variant == .audienceWebhook {
                            #expect(Set(destination.keys) == Set(expected.keys), "audience members ≠ source keys: \(context)")
                        }
                        let state = try await Self.keyed(client, Self.stateSQL("prop"))
                        #expect(
                            state == expected,
                            "delivered state ≠ source model: \(context)\n\(Self.difference(expected: expected, actual: state))")
                        // Every delivery was confirmed, so no change may ever come twice.
                        let repeated = Self.repeatedKeys(model)
                        #expect(repeated.isEmpty, "idempotency keys received twice: \(repeated) \(context)")
                        if destination != expected || state != expected || !repeated.isEmpty { return }
                    }
                }
            }
        }
    }

    // MARK: - 2. Fault injection

    enum Fault: String, CaseIterable, Sendable {
        case ok, error500, tooMany, timeout, appliedThen500, appliedThenTimeout
    }

    /// Picks the receiver's behaviour for each request from a seeded generator, and counts what it picked.
    final class Faults: @unchecked Sendable {
        private let lock = NSLock()
        private var rng: SeededRandom
        private var counts: [Fault: Int] = [:]
        init(seed: UInt64) { rng = SyncPropertyTests.scrambled(seed) }

        func next() -> Fault {
            lock.withLock {
                let roll = Int.random(in: 0..<100, using: &rng)
                let fault: Fault =
                    switch roll {
                    case ..<45: .ok
                    case ..<56: .error500
                    case ..<67: .tooMany
                    case ..<78: .timeout
                    case ..<89: .appliedThen500
                    default: .appliedThenTimeout
                    }
                counts[fault, default: 0] += 1
                return fault
            }
        }

        func count(_ fault: Fault) -> Int { lock.withLock { counts[fault] ?? 0 } }
        var summary: String {
            lock.withLock { Fault.allCases.map { "\($0.rawValue) \(counts[$0] ?? 0)" }.joined(separator: ", ") }
        }
    }

    /// The responder of a faulty receiver: answers 500, 429 (Retry-After: 0), times out (answers after 1 s, the
    /// client waits 0.2 s), or applies the batch and then answers 500 or times out (the change reached the
    /// destination but was not confirmed), or applies it and answers 200.
    static func faulty(_ model: Model, _ faults: Faults) -> @Sendable (TestReceiver.Request) -> TestReceiver.Answer {
        { request in
            switch faults.next() {
            case .ok:
                model.take(request, apply: true, confirmed: true)
                return .init()
            case .error500:
                model.take(request, apply: false, confirmed: false)
                return .init(status: 500, body: #"{"error": "boom"}"#)
            case .tooMany:
                model.take(request, apply: false, confirmed: false)
                return .init(status: 429, headers: [("Retry-After", "0")])
            case .timeout:
                model.take(request, apply: false, confirmed: false)
                return .init(delay: .seconds(1))
            case .appliedThen500:
                model.take(request, apply: true, confirmed: false)
                return .init(status: 500)
            case .appliedThenTimeout:
                model.take(request, apply: true, confirmed: false)
                return .init(delay: .seconds(1))
            }
        }
    }

    @Test(.timeLimit(.minutes(6)), arguments: [UInt64(11), 12, 13, 14, 15])
    func faultsNeverLoseAChangeNorMarkOneDeliveredWithoutConfirmation(seed: UInt64) async throws {
        let model = Model()
        let faults = Faults(seed: seed)
        let receiver = TestReceiver(respond: Self.faulty(model, faults))
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, [])
                var rng = SyncPropertyTests.scrambled(seed &* 31)
                var mutator = Mutator(seed: seed)
                let runner = F.runner(client)
                var log: [String] = []
                var failedRuns = 0
                for round in 1...10 {
                    if round == 1 { log += try await mutator.populate(client, 8).map { "  " + $0 } }
                    for _ in 0..<Int.random(in: 1...4, using: &rng) { log.append("  " + (try await mutator.mutate(client))) }
                    let batchSize = Int.random(in: 1...7, using: &rng)
                    try await F.apply(
                        """
                        {"syncs": [{"name": "faulty", "source": {"relation": "public.customers"}, "primaryKey": ["id"],
                          "fields": {"mail": "email", "tier": "plan"}, "mode": "mirror", "batchSize": \(batchSize), "maxAttempts": 2,
                          "destination": \(Self.webhook(base, timeout: "0.2"))}]}
                        """, client)
                    let before = try await Self.lastRunID(client)
                    var report = SyncRunner.Report()
                    var runs = 0
                    repeat {
                        runs += 1
                        report = try await runner.run("faulty")
                        log.append(
                            "run \(report.runID) (batch \(batchSize)): \(report.status) delivered \(report.delivered) failed \(report.failed) attempts \(report.attempts)"
                        )
                        // After every run, failed or not: nothing is marked delivered that the receiver did not confirm.
                        let unconfirmed = try await Self.unconfirmedState(client, model, sync: "faulty")
                        #expect(
                            unconfirmed.isEmpty,
                            "state rows never confirmed by the receiver: \(unconfirmed)\nseed \(seed) round \(round)\n\(log.joined(separator: "\n"))"
                        )
                        if !unconfirmed.isEmpty { return }
                    } while report.status != .succeeded && runs < 60
                    let context = "seed \(seed) round \(round) (\(faults.summary)):\n\(log.joined(separator: "\n"))"
                    #expect(report.status == .succeeded, "no run succeeded in 60: \(context)")
                    guard report.status == .succeeded else { return }

                    // No change lost: the receiver holds exactly the source, and so does the delivered state.
                    let expected = try await Self.keyed(client, Self.mirrorSQL)
                    let destination = model.rows
                    #expect(
                        destination == expected,
                        "receiver ≠ source: \(context)\n\(Self.difference(expected: expected, actual: destination))")
                    let state = try await Self.keyed(client, Self.stateSQL("faulty"))
                    #expect(
                        state == expected, "state ≠ source: \(context)\n\(Self.difference(expected: expected, actual: state))")

                    // The runs of this round: failed ones (with failed > 0 and an error), then the success.
                    let recorded = try await client.query(
                        """
                        SELECT status, failed, error, delivered FROM cdp.sync_runs WHERE run_id > \(before) ORDER BY run_id
                        """
                    ).map { try $0.decode((String, Int, String?, Int).self) }
                    #expect(recorded.count == runs, "\(recorded) \(context)")
                    #expect(recorded.last?.0 == "succeeded", "\(recorded) \(context)")
                    for run in recorded.dropLast() {
                        #expect(run.0 == "failed" && run.1 > 0 && run.2 != nil, "a run before the success: \(run) \(context)")
                    }
                    failedRuns += runs - 1
                    if destination != expected || state != expected { return }
                }
                // The seed really exercised the faults, the nasty ones included.
                #expect(failedRuns > 0, "seed \(seed): no run failed (\(faults.summary))")
                #expect(faults.count(.appliedThen500) + faults.count(.appliedThenTimeout) > 0, "seed \(seed): \(faults.summary)")
                #expect(faults.count(.timeout) + faults.count(.appliedThenTimeout) > 0, "seed \(seed): \(faults.summary)")
                let failedInDB = try await client.query(
                    "SELECT count(*) FROM cdp.sync_runs WHERE status = 'failed' AND failed > 0"
                ).first![0].decode(Int.self)
                #expect(failedInDB == failedRuns)
            }
        }
    }

    /// A change that reached the destination but was not confirmed (500 after applying), and then the source goes back
    /// to what was last confirmed: the next run finds no difference against `cdp.sync_state` and sends nothing, so the
    /// destination keeps the unconfirmed value for good.
    @Test func anUnconfirmedChangeThatTheSourceUndoesIsRepaired() async throws {
        let model = Model()
        let failing = Counter()
        let receiver = TestReceiver { request in
            // Requests 2 (and only 2): applied, then 500.
            let n = failing.next()
            model.take(request, apply: true, confirmed: n != 2)
            return n == 2 ? .init(status: 500) : .init()
        }
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, [("c1", "a@example.com", "free", 1)])
                try await F.apply(
                    """
                    {"syncs": [{"name": "undo", "source": {"relation": "public.customers"}, "primaryKey": ["id"],
                      "fields": {"mail": "email", "tier": "plan"}, "mode": "mirror", "maxAttempts": 1, "destination": \(Self.webhook(base))}]}
                    """, client)
                let runner = F.runner(client)
                #expect(try await runner.run("undo").status == .succeeded)
                try await client.execute("UPDATE public.customers SET plan = 'pro' WHERE id = 'c1'")
                #expect(try await runner.run("undo").status == .failed)  // the receiver applied 'pro' and answered 500
                try await client.execute("UPDATE public.customers SET plan = 'free' WHERE id = 'c1'")
                let third = try await runner.run("undo")
                #expect(third.status == .succeeded)
                let expected = try await Self.keyed(client, Self.mirrorSQL)
                #expect(
                    model.rows == expected,
                    """
                    after a run that succeeded, the destination still has the unconfirmed change (run \(third.runID) sent \(third.delivered) changes):
                    \(Self.difference(expected: expected, actual: model.rows))
                    """)
            }
        }
    }

    /// While a row's change is unconfirmed, the row changes A → B → A: the idempotency key of the second A is the key
    /// of the first (same operation, hash and last confirmed run), so a receiver that drops repeated keys, as the
    /// key invites, drops the second A and keeps B.
    @Test func anIdempotencyKeyIsNeverReusedForALaterChange() async throws {
        let model = Model()
        let calls = Counter()
        let receiver = TestReceiver { request in
            // Requests 2 and 3: applied, then 500.
            let n = calls.next()
            let fails = n == 2 || n == 3
            model.take(request, apply: true, confirmed: !fails)
            return fails ? .init(status: 500) : .init()
        }
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, [("c1", "a@example.com", "free", 1)])
                try await F.apply(
                    """
                    {"syncs": [{"name": "aba", "source": {"relation": "public.customers"}, "primaryKey": ["id"],
                      "fields": {"mail": "email", "tier": "plan"}, "mode": "mirror", "maxAttempts": 1, "destination": \(Self.webhook(base))}]}
                    """, client)
                let runner = F.runner(client)
                #expect(try await runner.run("aba").status == .succeeded)
                var statuses: [SyncRunner.Report.Status] = []
                for plan in ["pro", "team", "pro"] {
                    try await client.execute("UPDATE public.customers SET plan = \(plan) WHERE id = 'c1'")
                    statuses.append(try await runner.run("aba").status)
                }
                #expect(statuses == [.failed, .failed, .succeeded])
                let sent = model.received.map { "\($0.fields) \($0.idempotencyKey)" }
                #expect(sent.count == 4)
                if sent.count == 4 {
                    let keys = model.received.map(\.idempotencyKey)
                    #expect(
                        keys[3] != keys[1],
                        "the change 'team' → 'pro' reuses the key of the earlier unconfirmed change 'free' → 'pro':\n\(sent.joined(separator: "\n"))"
                    )
                }
                let expected = try await Self.keyed(client, Self.mirrorSQL)
                #expect(
                    model.rows == expected,
                    """
                    an idempotent receiver ends up with a value the source no longer has while the state says it has the source's:
                    \(Self.difference(expected: expected, actual: model.rows))
                    """)
            }
        }
    }

    // MARK: - 3. Two workers never send the same change twice

    @Test(.timeLimit(.minutes(6)))
    func concurrentRunnersNeverSendTheSameChangeTwice() async throws {
        let model = Model()
        // Always confirms, slowly, so that runs overlap.
        let receiver = TestReceiver {
            model.take($0, apply: true, confirmed: true); return .init(delay: .milliseconds(60))
        }
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, (1...6).map { (String(format: "c%02d", $0), "a@example.com", "free", $0) })
                try await F.apply(
                    """
                    {"syncs": [{"name": "pair", "source": {"relation": "public.customers"}, "primaryKey": ["id"],
                      "fields": {"mail": "email", "tier": "plan"}, "mode": "mirror", "batchSize": 2, "schedule": {"every": "1h"},
                      "destination": \(Self.webhook(base))}]}
                    """, client)
                // A second "process": its own pool of connections to the same database.
                let other = PostgresClient(
                    configuration: client.configuration, options: .init(maxConnections: 2), logger: TestDatabase.logger)
                do {
                    let first = F.runner(client), second = F.runner(other)
                    let worker = SyncWorker(client: other, logger: TestDatabase.logger, runner: second, registry: F.registry)
                    var mutator = Mutator(seed: 99)
                    var rng = SyncPropertyTests.scrambled(99)
                    var log: [String] = []
                    var skipped = 0
                    for round in 1...20 {
                        if round > 1 {
                            // At least one change that is sure to be sent (a plan no row has), so each run takes a while.
                            try await client.execute(
                                """
                                UPDATE public.customers SET plan = \("plan-\(round)") WHERE id = (SELECT min(id) FROM public.customers)
                                """)
                            for _ in 0..<Int.random(in: 0...3, using: &rng) {
                                log.append("  " + (try await mutator.mutate(client)))
                            }
                        }
                        let before = try await Self.lastRunID(client)
                        var reports: [SyncRunner.Report] = []
                        if round % 4 == 0 {
                            // A scheduled worker (the other pool) against a manual run.
                            try await client.execute("UPDATE cdp.syncs SET next_run_at = now() - interval '1 second'")
                            async let scheduled = worker.runDue()
                            async let manual = first.run("pair")
                            let (_, report) = try await (scheduled, manual)
                            reports = [report]
                        } else {
                            async let a = first.run("pair")
                            async let b = second.run("pair")
                            reports = try await [a, b]
                        }
                        let runs = try await client.query(
                            """
                            SELECT run_id, status, added + changed + removed, started_at, finished_at FROM cdp.sync_runs WHERE run_id > \(before) ORDER BY run_id
                            """
                        ).map { try $0.decode((Int64, String, Int, Date, Date?).self) }
                        log.append(
                            "round \(round): reports \(reports.map(\.status)), runs \(runs.map { "\($0.0) \($0.1) \($0.2) changes" })"
                        )
                        let context = log.joined(separator: "\n")
                        #expect(runs.allSatisfy { $0.1 == "succeeded" }, "\(context)")
                        // At most one run had something to send; when both ran, one after the other, never at once.
                        #expect(runs.filter { $0.2 > 0 }.count <= 1, "\(context)")
                        if runs.count == 2, let end = runs[0].4 {
                            #expect(runs[1].3 >= end, "two runs of the same sync overlapped: \(context)")
                        }
                        skipped += reports.filter { $0.status == .skipped }.count + (round % 4 == 0 && runs.count == 1 ? 1 : 0)
                        #expect(runs.count >= 1, "\(context)")
                    }
                    // Nearly always one of the two found the sync running (each run waits ≥ 60 ms for the receiver).
                    #expect(skipped >= 15, "only \(skipped) of 20 rounds had a run skipped: \(log.joined(separator: "\n"))")
                    let repeated = Self.repeatedKeys(model)
                    #expect(repeated.isEmpty, "idempotency keys received twice: \(repeated)\n\(log.joined(separator: "\n"))")
                    let last = try await first.run("pair")
                    #expect(last.status == .succeeded && last.added + last.changed + last.removed == 0, "\(last)")
                    let expected = try await Self.keyed(client, Self.mirrorSQL)
                    #expect(model.rows == expected, Comment(rawValue: Self.difference(expected: expected, actual: model.rows)))
                    await other.shutdown()
                } catch {
                    await other.shutdown()
                    throw error
                }
            }
        }
    }

    // MARK: - 4. A worker killed mid-run

    enum Interruption: String, Sendable, CaseIterable {
        /// The task running the sync is cancelled (a worker stopping) while a batch is in flight.
        case cancelled
        /// The worker "dies": its database session is terminated (as when its process is killed) and its task cancelled.
        case killed
    }

    @Test(.timeLimit(.minutes(6)), arguments: Interruption.allCases)
    func aWorkerInterruptedMidRunLosesNothingAndResendsOnlyTheUnconfirmed(_ interruption: Interruption) async throws {
        let model = Model()
        let calls = Counter()
        let (inFlight, signal) = AsyncStream<Void>.makeStream()
        let receiver = TestReceiver { request in
            // Requests 1 and 2 are confirmed at once; request 3 is applied but its answer never comes in time.
            let n = calls.next()
            model.take(request, apply: true, confirmed: n != 3)
            if n == 3 {
                signal.yield()
                return .init(delay: .seconds(3))
            }
            return .init()
        }
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, (1...12).map { (String(format: "c%02d", $0), "u\($0)@example.com", "pro", $0) })
                try await F.apply(
                    """
                    {"syncs": [{"name": "crash", "source": {"relation": "public.customers"}, "primaryKey": ["id"],
                      "fields": {"mail": "email", "tier": "plan"}, "mode": "mirror", "batchSize": 3,
                      "destination": \(Self.webhook(base, timeout: "10"))}]}
                    """, client)
                // The worker that is interrupted has its own pool, as another process would.
                let doomed = PostgresClient(
                    configuration: client.configuration, options: .init(maxConnections: 2), logger: TestDatabase.logger)
                do {
                    let task = Task { try await F.runner(doomed).run("crash") }
                    var events = inFlight.makeAsyncIterator()
                    _ = await events.next()
                    if interruption == .killed {
                        let killed = try await client.query(
                            """
                            SELECT pg_terminate_backend(pid) FROM pg_locks
                            WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                            """
                        ).map { try $0[0].decode(Bool.self) }
                        #expect(killed == [true], "the running sync's session (holding its advisory lock) was not found")
                    }
                    task.cancel()
                    let outcome: String
                    switch await task.result {
                    case .success(let report): outcome = "\(report.status)"
                    case .failure(let error): outcome = "threw \(error)"
                    }
                    #expect(outcome != "succeeded", "the interrupted run reported success")
                    let crashedRun = try await client.query("SELECT run_id, status FROM cdp.sync_runs ORDER BY run_id").map {
                        try $0.decode((Int64, String).self)
                    }
                    #expect(crashedRun.count == 1 && crashedRun.first?.1 != "succeeded", "\(crashedRun)")
                    if interruption == .cancelled {
                        // The runner's CancellationError branch sets 'cancelled' and records it, with what it did.
                        #expect(
                            crashedRun.first?.1 == "cancelled",
                            "a cancelled run is recorded as \(crashedRun.first?.1 ?? "-") (outcome: \(outcome))")
                        let recorded = try await client.query(
                            "SELECT delivered, batches, duration_ms FROM cdp.sync_runs ORDER BY run_id LIMIT 1"
                        ).first!.decode((Int, Int, Double).self)
                        let confirmed = try await client.query("SELECT count(*) FROM cdp.sync_state").scalar(Int.self)
                        #expect(
                            recorded.0 == confirmed && recorded.1 >= 1 && recorded.2 > 0,
                            "cancelled run recorded as delivered \(recorded.0), batches \(recorded.1), \(recorded.2) ms; \(confirmed) confirmed"
                        )
                    }
                    let confirmedBefore = Set(model.confirmed.map(\.idempotencyKey))
                    let receivedBefore = model.received.count
                    #expect(
                        confirmedBefore.count == 6 && receivedBefore == 9,
                        "confirmed \(confirmedBefore.count), received \(receivedBefore)")
                    let unconfirmed = try await Self.unconfirmedState(client, model, sync: "crash")
                    #expect(unconfirmed.isEmpty, "state rows never confirmed: \(unconfirmed)")
                    let stateCount = try await client.query("SELECT count(*) FROM cdp.sync_state").first![0].decode(Int.self)
                    #expect(stateCount == 6)

                    // The next run, by another worker (the first pool): not skipped, it completes.
                    let holders = try await client.query(
                        """
                        SELECT a.pid, a.state, a.query FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)
                        WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        """
                    ).map { try $0.decode((Int, String?, String?).self) }
                    var next = try await F.runner(client).run("crash")
                    if interruption == .cancelled {
                        #expect(
                            next.status != .skipped,
                            """
                            after the cancelled run, another worker's run is skipped: the sync's advisory lock is still held \
                            by the interrupted worker's pooled connection (pid, state, last query): \(holders)
                            """)
                    }
                    if next.status == .skipped {
                        // Let the interrupted "process" go away for good (its connections close, releasing the lock).
                        await doomed.shutdown()
                        for _ in 0..<100 {
                            let held = try await client.query(
                                """
                                SELECT count(*) FROM pg_locks
                                WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                                """
                            ).first![0].decode(Int.self)
                            if held == 0 { break }
                            try await Task.sleep(for: .milliseconds(50))
                        }
                        next = try await F.runner(client).run("crash")
                    }
                    #expect(next.status == .succeeded && next.delivered == 6, "\(next)")
                    let runs = try await client.query("SELECT run_id, status FROM cdp.sync_runs ORDER BY run_id").map {
                        try $0.decode((Int64, String).self)
                    }
                    let firstStatus = runs.first?.1
                    #expect(
                        firstStatus == "abandoned" || (interruption == .cancelled && firstStatus == "cancelled"),
                        "the interrupted run is left \(firstStatus ?? "-"): \(runs)")
                    #expect(!runs.contains { $0.1 == "running" }, "\(runs)")

                    // Destination equals source; only the unconfirmed changes were sent again, each once.
                    let expected = try await Self.keyed(client, Self.mirrorSQL)
                    #expect(model.rows == expected, Comment(rawValue: Self.difference(expected: expected, actual: model.rows)))
                    let all = model.received
                    let after = all[receivedBefore...].map(\.idempotencyKey)
                    #expect(
                        Set(after).isDisjoint(with: confirmedBefore), "changes confirmed before the interruption were sent again")
                    #expect(
                        Set(after) == Set(all.map(\.idempotencyKey)).subtracting(confirmedBefore) && after.count == 6,
                        "sent after the interruption: \(after.count) changes")
                    // The in-flight batch went again with the same idempotency keys.
                    let inFlightKeys = Set(all[6..<9].map(\.idempotencyKey))
                    #expect(inFlightKeys.isSubset(of: Set(after)))
                    #expect(try await Self.unconfirmedState(client, model, sync: "crash").isEmpty)
                    await doomed.shutdown()
                } catch {
                    await doomed.shutdown()
                    throw error
                }
            }
        }
    }
}
