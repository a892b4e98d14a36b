import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryIdentity
@testable import TributaryModel

/// Rules files, identifier parsing and the merge rule itself, without a database.
@Suite struct IdentityRulesTests {
    func rules(_ json: String) throws -> IdentityRules { try IdentityRules(json: Array(json.utf8)) }

    func expectError(_ json: String, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try rules(json)
            Issue.record("no error for \(json)", sourceLocation: sourceLocation)
        } catch {
            #expect("\(error)".contains(fragment), "\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func emptyFileGivesTheDefaults() throws {
        let defaults = try rules("{}")
        #expect(defaults == IdentityRules())
        #expect(
            defaults.limit(of: "user_id") == 1 && defaults.limit(of: "email") == 5 && defaults.limit(of: "anonymous_id") == 1000)
        #expect(
            defaults.rank(of: "user_id") < defaults.rank(of: "email") && defaults.rank(of: "phone") < defaults.rank(of: "crm_id"))
        #expect(defaults.rank(of: "crm_id") < defaults.rank(of: "anonymous_id"), "anonymous_id comes last unless listed")
        let custom = try rules(
            #"{"limits": {"email": 2}, "blocked": ["^x$", {"pattern": "^k-", "kinds": ["anonymous_id"]}], "hubThreshold": 7}"#)
        #expect(custom.limit(of: "email") == 2 && custom.limit(of: "user_id") == 1, "user_id keeps its limit of 1")
        #expect(
            custom.blockedRegex["anonymous_id"]?.contains("^k-") == true && custom.blockedRegex["*"]?.contains("^k-") == false)
        #expect(custom.hubThreshold == 7)
    }

    @Test func badRulesNameThePathOfTheProblem() {
        expectError(#"{"limit": {}}"#, "rules.limit: unknown key")
        expectError(#"{"limits": {"email": "five"}}"#, "rules.limits.email: must be an integer")
        expectError(#"{"limits": {"email": 0}}"#, "limits.email: must be at least 1")
        expectError(#"{"priority": ["Email"]}"#, "priority[0]: 'Email' is not a valid kind")
        expectError(#"{"priority": ["email", "email"]}"#, "listed more than once")
        expectError(#"{"normalize": {"email": "soundex"}}"#, "normalize.email: unknown method 'soundex'")
        expectError(#"{"blocked": [42]}"#, "rules.blocked[0]: must be a pattern string")
        expectError(#"{"blocked": [{"kinds": ["email"]}]}"#, "rules.blocked[0].pattern: required")
        expectError(#"{"hubThreshold": 1}"#, "hubThreshold: must be at least 2")
        expectError(#"{"maxLength": 3}"#, "maxLength: must be between")
        expectError(#"[1]"#, "rules: must be a JSON object")
        expectError(#"{"#, "rules: invalid JSON")
    }

    @Test func identifiersParseFromTheCommandLine() throws {
        let parsed = try Identifier(parsing: "email:Jane@Example.com")
        #expect(parsed.kind == "email" && parsed.value == "Jane@Example.com")
        #expect(try Identifier(parsing: "user_id:a:b").value == "a:b")
        #expect(throws: IdentityError.self) { try Identifier(parsing: "jane@example.com") }
        #expect(throws: IdentityError.self) { try Identifier(parsing: ":x") }
        #expect(throws: IdentityError.self) { try Identifier(parsing: "E-mail:x") }
    }

    // swift-format-ignore: NeverUseForceTry
    func id(_ text: String) -> Identifier { try! Identifier(parsing: text) }

    @Test func mergeRuleKeepsHigherPriorityIdentifiersAndDropsTheRest() {
        var engine = IdentityEngine(rules: IdentityRules())
        func event(_ seq: Int64, _ ids: String...) -> ResolverEvent {
            ResolverEvent(seq: seq, identifiers: ids.map(id).sorted(by: IdentityRules().precedes))
        }
        let mum = engine.process(event(1, "anonymous_id:tablet", "user_id:mum"))!
        #expect(mum == id("user_id:mum").foundedProfileID, "founded by the first identifier in priority order")
        let son = engine.process(event(2, "anonymous_id:tablet", "user_id:son"))!
        #expect(son != mum && son == id("user_id:son").foundedProfileID, "the tablet is dropped: it would bring a second user_id")
        #expect(engine.profile(of: id("anonymous_id:tablet")) == mum)
        // A new identifier that would break a limit founds its own profile.
        var strict = IdentityRules()
        strict.limits["email"] = 1
        var limited = IdentityEngine(rules: strict)
        let first = limited.process(event(1, "user_id:u", "email:a@x.com"))!
        let second = limited.process(event(2, "user_id:u", "email:b@x.com"))!
        #expect(first == second)
        #expect(limited.profile(of: id("email:b@x.com")) == id("email:b@x.com").foundedProfileID)
        // Merging: the profile founded first survives, whatever the order of identifiers on the event.
        var merging = IdentityEngine(rules: IdentityRules())
        let early = merging.process(event(1, "anonymous_id:a"))!
        let late = merging.process(event(2, "user_id:u"))!
        let merged = merging.process(event(3, "user_id:u", "anonymous_id:a"))!
        #expect(merged == early && merging.find(late) == early)
        #expect(merging.merges.count == 1 && merging.merges[0].identifier == id("user_id:u"))
        // No identifiers: no profile; only hubs: the first hub's own profile.
        #expect(merging.process(ResolverEvent(seq: 4, identifiers: [])) == nil)
        #expect(
            merging.process(ResolverEvent(seq: 5, identifiers: [], hubs: [id("email:hub@x.com")]))
                == id("email:hub@x.com").foundedProfileID)
    }
}

/// Identity details against real PostgreSQL: SQL and Swift agree, bad input, explain, several processors.
@Suite struct IdentityDatabaseTests {
    typealias F = IdentityFixture

    @Test func sqlAndSwiftDeriveTheSameProfileIDs() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            for value in ["jane@example.com", "O'Brien \\ \"quoted\" -- ; DROP", "日本語🌊", "", String(repeating: "x", count: 300)] {
                let sql = try await client.query("SELECT cdp.identity_profile_id('email', \(value))").scalar(UUID.self)
                #expect(sql == Identifier(kind: "email", value: value).foundedProfileID)
            }
        }
    }

    @Test func badIdentifiersAreIgnoredCountedAndTheEventKept() async throws {
        let longest = "k" + String(repeating: "_", count: 61) + "9", tooLong = String(repeating: "m", count: 64)
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            try await F.write(
                [
                    F.event(user: "u-1", traits: #"{"email": {"address": "x@y.z"}, "phone": true}"#),
                    F.event(user: "u-1", traits: #"{"email": "\#(String(repeating: "a", count: 5000))@x.com"}"#),
                    F.event(user: "u-1", traits: #"{"email": "bad\u0007@x.com"}"#),
                    F.event(anonymous: "undefined", user: "u-1", traits: #"{"email": "not-an-email", "phone": "12"}"#),
                    F.event(
                        anonymous: "a-1", user: "u-1",
                        context: #"{"externalIds": [{"id": "c-1", "type": "Bad Type!"}, "x", {"id": "c-2", "type": "crm_id"}]}"#),
                    // Kinds at the length limit (63 characters) and past it, and one not starting with a letter.
                    F.event(
                        user: "u-1",
                        context: #"""
                            {"externalIds": [{"id": "c-3", "type": "\#(longest)"}, {"id": "c-4", "type": "\#(tooLong)"},
                                             {"id": "c-5", "type": "9abc"}]}
                            """#),
                ], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            let ignored = Dictionary(
                uniqueKeysWithValues: try await client.query(
                    "SELECT reason || '/' || kind, count::int8 FROM cdp.identity_ignored"
                ).map { try $0.decode((String, Int).self) })
            #expect(ignored["wrong_type/email"] == 1 && ignored["wrong_type/phone"] == 1)
            #expect(ignored["too_long/email"] == 1 && ignored["control_characters/email"] == 1)
            #expect(
                ignored["blocked/anonymous_id"] == 1 && ignored["invalid_email/email"] == 1 && ignored["invalid_phone/phone"] == 1
            )
            #expect(ignored["invalid_kind/bad type!"] == 1 && ignored["wrong_type/external_id"] == 1)
            #expect(ignored["invalid_kind/\(tooLong.prefix(63))"] == 1 && ignored["invalid_kind/9abc"] == 1)
            let partition = try await F.partition(client)
            #expect(Set(partition.keys) == ["user_id:u-1", "anonymous_id:a-1", "crm_id:c-2", "\(longest):c-3"])
            #expect(try await client.query("SELECT count(*) FROM cdp.events WHERE profile_id IS NOT NULL").scalar(Int.self) == 6)
        }
    }

    @Test func rulesWithAnInvalidRegexAreRefusedAndNothingChanges() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            let admin = IdentityAdmin(client: client, logger: TestDatabase.logger)
            var rules = IdentityRules()
            rules.blocked = [.init(pattern: "^ok$"), .init(pattern: "(unclosed")]
            await #expect(throws: IdentityError.self) { try await admin.apply(rules: rules) }
            do { try await admin.apply(rules: rules) } catch {
                #expect("\(error)".contains("rules.blocked[1]: '(unclosed' is not a valid regular expression"))
            }
            // migrate stored the defaults; the refused rules changed nothing.
            #expect(try await admin.rules() == IdentityRules())
            rules.blocked = [.init(pattern: "^ok$")]
            guard case .stored = try await admin.apply(rules: rules) else { Issue.record("expected stored"); return }
            guard case .unchanged = try await admin.apply(rules: rules) else { Issue.record("expected unchanged"); return }
            #expect(try await admin.rules() == rules)
        }
    }

    @Test func explainTellsHowAProfileCameTogether() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            try await F.write(
                [
                    F.event(anonymous: "a-1", type: .page),
                    F.event(anonymous: "a-2", traits: #"{"email": "jane@example.com"}"#),
                    F.event(anonymous: "a-1", user: "u-1", traits: #"{"email": "Jane@Example.com"}"#),
                    F.event(anonymous: "a-1", user: "u-2"),
                ], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            let admin = IdentityAdmin(client: client, logger: TestDatabase.logger)
            let text = try await admin.explain(Identifier(kind: "email", value: " JANE@example.com"))
            #expect(text.contains("normalized from ' JANE@example.com'"))
            #expect(text.contains("identifiers (4)"))
            for part in [
                "anonymous_id:a-1", "anonymous_id:a-2", "user_id:u-1", "merged in by event seq 3", "user_id:u-2 on event seq 4",
            ] {
                #expect(text.contains(part), "explain should mention \(part):\n\(text)")
            }
            await #expect(throws: IdentityError.self) {
                try await admin.explain(Identifier(kind: "email", value: "nobody@x.com"))
            }
            do { _ = try await admin.explain(Identifier(kind: "email", value: "null")) } catch {
                #expect("\(error)".contains("it would be ignored: blocked"))
            }
        }
    }

    @Test func junkSuspectsAreListedAndExplainedButNothingIsRefused() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            try await F.write(
                [
                    // A placeholder no pattern blocks, typed by three strangers.
                    F.event(anonymous: "v-1", traits: #"{"email": "guest@shop.example"}"#),
                    F.event(anonymous: "v-2", traits: #"{"email": "Guest@Shop.example"}"#),
                    F.event(anonymous: "v-3", traits: #"{"email": "guest@shop.example"}"#),
                    // Amy signed in on one of her two browsers: her email also links her user id.
                    F.event(anonymous: "a-1", traits: #"{"email": "amy@example.com"}"#),
                    F.event(anonymous: "a-2", user: "u-amy", traits: #"{"email": "amy@example.com"}"#),
                    // Bob never signed in, but both his browsers also carry his phone.
                    F.event(anonymous: "b-1", traits: #"{"email": "bob@example.com", "phone": "+1 201 555 0123"}"#),
                    F.event(anonymous: "b-2", traits: #"{"email": "bob@example.com", "phone": "+12015550123"}"#),
                    // Cat typed her email on two browsers and nothing else: the shape of the placeholder.
                    F.event(anonymous: "c-1", traits: #"{"email": "cat@example.com"}"#),
                    F.event(anonymous: "c-2", traits: #"{"email": "cat@example.com"}"#),
                    // One browser is not several; a blocked placeholder is no identifier at all.
                    F.event(anonymous: "d-1", traits: #"{"email": "dan@example.com"}"#),
                    F.event(anonymous: "t-1", traits: #"{"email": "test@test.com"}"#),
                    F.event(anonymous: "t-2", traits: #"{"email": "test@test.com"}"#),
                ], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            let admin = IdentityAdmin(client: client, logger: TestDatabase.logger)
            let suspects = try await admin.junkSuspects()
            #expect(
                suspects.map { "\($0.identifier) \($0.anonymousIDs)" } == [
                    "email:guest@shop.example 3", "email:cat@example.com 2",
                ])
            // Advisory: the suspects still merged what they link.
            let partition = try await F.partition(client)
            #expect(partition["anonymous_id:v-1"] == partition["anonymous_id:v-3"])
            #expect(suspects[0].profile.uuidString.lowercased() == partition["anonymous_id:v-2"])
            #expect(try await admin.junkSuspects(limit: 1).map(\.identifier.value) == ["guest@shop.example"])

            let visitor = try await admin.explain(Identifier(kind: "anonymous_id", value: "v-2"))
            #expect(
                visitor.contains("junk suspects") && visitor.contains("email:guest@shop.example joins 3 anonymous ids"),
                "\(visitor)")
            for person in ["amy@example.com", "bob@example.com", "dan@example.com"] {
                let text = try await admin.explain(Identifier(kind: "email", value: person))
                #expect(!text.contains("junk suspects"), "\(person):\n\(text)")
            }
            // The rebuild arrives at the same graph, so at the same suspects.
            _ = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(try await admin.junkSuspects() == suspects)
            // Blocking the placeholder splits its visitors and takes it off the list.
            var rules = try await admin.rules()
            rules.blocked = [.init(pattern: "^guest@shop\\.example$")]
            _ = try await admin.apply(rules: rules)
            #expect(try await admin.junkSuspects().map(\.identifier.value) == ["cat@example.com"])
            let split = try await F.partition(client)
            #expect(split["anonymous_id:v-1"] != split["anonymous_id:v-3"])
        }
    }

    @Test func severalProcessorsGiveTheResultOfOne() async throws {
        try await TestDatabase.withFreshDatabase(maxConnections: 12) { (client) async throws in
            try await F.migrated(client)
            let events = IdentityEquivalenceTests.randomStream(seed: 99, count: 300)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for start in stride(from: 0, to: events.count, by: 20) {
                        try await F.write(Array(events[start..<min(events.count, start + 20)]), client)
                    }
                }
                for size in [3, 7, 11] {
                    group.addTask {
                        let stage = IdentityStage(client: client, logger: TestDatabase.logger, batchSize: size)
                        for _ in 0..<40 { _ = try await stage.processBatch() }
                    }
                }
                try await group.waitForAll()
            }
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            #expect(
                try await client.query(
                    "SELECT count(*) FROM cdp.events WHERE profile_id IS NULL AND coalesce(anonymous_id, '') NOT IN ('', 'null', 'anonymous', 'undefined', '00000000-0000-0000-0000-000000000000')"
                ).scalar(Int.self) == 0)
            let report = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(report.nodesChanged == 0 && report.eventsRestamped == 0)
        }
    }

    @Test func rebuildRunsWhileIngestionAndTheStageContinue() async throws {
        try await TestDatabase.withFreshDatabase(maxConnections: 12) { (client) async throws in
            try await F.migrated(client)
            let events = IdentityEquivalenceTests.randomStream(seed: 7, count: 400)
            let stage = IdentityStage(client: client, logger: TestDatabase.logger, batchSize: 13)
            try await F.write(Array(events[0..<100]), client)
            let running = Task { try await stage.run(pollInterval: .milliseconds(20)) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for start in stride(from: 100, to: events.count, by: 10) {
                        try await F.write(Array(events[start..<min(events.count, start + 10)]), client)
                    }
                }
                group.addTask {
                    for _ in 0..<3 {
                        _ = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
                    }
                }
                try await group.waitForAll()
            }
            running.cancel()
            _ = try? await running.value
            _ = try await stage.catchUp()
            let last = try await client.query("SELECT max(seq) FROM cdp.events").scalar(Int64.self)
            #expect(try await client.query("SELECT seq FROM cdp.stage_checkpoints").scalar(Int64.self) == last)
            let report = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(
                report.nodesChanged == 0 && report.eventsRestamped == 0,
                "the graph after concurrent rebuilds is the real-time one")
        }
    }

    @Test func theStageKeepsGoingAcrossADatabaseRestart() async throws {
        try await TestDatabase.withPrivateCluster { (server) async throws in
            let configuration = try await server.start()
            let client = PostgresClient(
                configuration: configuration, options: .init(maxConnections: 4), logger: TestDatabase.logger)
            try await F.migrated(client)
            let stage = IdentityStage(client: client, logger: TestDatabase.logger)
            let running = Task { try await stage.run(pollInterval: .milliseconds(100)) }
            func waitUntilStamped(_ count: Int) async throws {
                for _ in 0..<300 {
                    let stamped = try? await client.query("SELECT count(*) FROM cdp.events WHERE profile_id IS NOT NULL").scalar(
                        Int.self)
                    if stamped == count { return }
                    try await Task.sleep(for: .milliseconds(50))
                }
                Issue.record("events were not stamped")
            }
            try await F.write([F.event(anonymous: "a-1", user: "u-1")], client)
            try await waitUntilStamped(1)
            #expect(try await server.stop())
            try await Task.sleep(for: .milliseconds(300))
            _ = try await server.start()
            // The pool may hand out a connection that died with the server: the first statement on it fails, as it
            // would for any client; the test's own write retries (the stage is what this test is about).
            for attempt in 1...5 {
                do {
                    try await F.write([F.event(anonymous: "a-2", user: "u-1")], client)
                    break
                } catch let error as PostgresError where error.kind == .connection && attempt < 5 {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            try await waitUntilStamped(2)
            running.cancel()
            _ = try? await running.value
            #expect(try await client.query("SELECT count(DISTINCT profile_id) FROM cdp.events").scalar(Int.self) == 1)
            await client.shutdown()
        }
    }
}
