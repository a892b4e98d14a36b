import Foundation
import Testing
@testable import Postgres
@testable import TributaryModel

/// The query's text with each bind parameter shown as `‹value›`: what a definition supplied stands apart from what
/// the compiler wrote, and a value written into the text instead of bound shows up without its marks.
func shown(_ query: PostgresQuery) -> String {
    PostgresQuery.replacingPlaceholders(in: query.sql) { "‹\(String(decoding: query.binds[$0 - 1].bytes ?? [], as: UTF8.self))›" }
}

private enum Events {
    enum OrderCompleted {
        static let revenue = Property<Double>("revenue", event: "Order Completed")
        static let currency = Property<String>("currency", event: "Order Completed")
    }
}

private enum Traits {
    static let plan = Trait<String>("plan")
    static let age = Trait<Int>("age")
    static let createdAt = Trait<Date>("created_at")
    static let email = Trait<String>("email")
}

@Suite struct SegmentCompilerTests {
    static let moment = Date(timeIntervalSince1970: 1_780_000_000)

    func compile(_ segments: Segment..., name: String? = nil, form: SegmentCompiler.Form = .view) throws -> String {
        let compiler = SegmentCompiler(SegmentDefinitions(segments))
        let target = name ?? segments[0].name
        switch form {
        case .view:
            let create: PostgresQuery =
                "CREATE OR REPLACE VIEW \(unescaped: try compiler.viewName(target)) AS\n\(try compiler.select(target))"
            #expect(try create.inlined() == compiler.createView(target), "the view is its query with the values inlined")
            return shown(create)
        case .perProfile: return shown(try compiler.perProfile(target, profiles: []))
        }
    }

    @Test func theBenchmarkSegmentCompilesToOnePassOverTheEvents() throws {
        let sql = try compile(
            Segment("buyers", fields: [.trait("email")]) {
                Event("Order Completed", within: .days(30)).count >= 2
                Event("Order Completed", within: .days(30)).sum(Events.OrderCompleted.revenue) > 100.0
            })
        #expect(
            sql == """
                CREATE OR REPLACE VIEW "segments"."buyers" AS
                SELECT p.profile_id,
                       nullif(p.traits -> ‹email›, 'null'::jsonb) AS "email"
                FROM cdp.profile_data AS p
                WHERE p.profile_id IN (
                    SELECT e.profile_id
                    FROM cdp.events AS e
                    WHERE e.profile_id IS NOT NULL
                      AND e.event = ‹Order Completed›
                      AND e.timestamp > now() - interval '24 hours' * 30
                    GROUP BY e.profile_id
                    HAVING count(*) >= 2
                       AND coalesce(sum(cdp.jsonb_numeric(e.properties -> ‹revenue›)), 0) > 100
                )
                """)
        let query = try SegmentCompiler(SegmentDefinitions([Segment("buyers") { Event("Order Completed").count >= 2 }])).select(
            "buyers")
        #expect(!query.sql.contains("Order Completed") && query.binds.count == 1, "every value is a bind: \(query.sql)")
    }

    @Test func traitComparisonsAndBooleanStructure() throws {
        let sql = try compile(
            Segment("mixed") {
                Traits.plan == "pro"
                AnyOf {
                    Traits.age >= 18
                    Traits.email.contains("@example.com")
                    Traits.plan.isIn(["team", "enterprise"])
                }
                Not { Traits.email.isNull }
                Computed<Double>("lifetime_value") < 10.5
                Traits.createdAt > Self.moment
            })
        #expect(
            sql == """
                CREATE OR REPLACE VIEW "segments"."mixed" AS
                SELECT p.profile_id
                FROM cdp.profile_data AS p
                WHERE p.traits -> ‹plan› = ‹"pro"›::jsonb
                  AND (
                    cdp.jsonb_numeric(p.traits -> ‹age›) >= 18
                    OR strpos(CASE WHEN jsonb_typeof(p.traits -> ‹email›) = 'string' THEN p.traits -> ‹email› #>> '{}' END, ‹@example.com›) > 0
                    OR p.traits -> ‹plan› IN (‹"team"›::jsonb, ‹"enterprise"›::jsonb)
                )
                  AND NOT coalesce(coalesce(jsonb_typeof(p.traits -> ‹email›), 'null') = 'null', false)
                  AND cdp.jsonb_numeric(p.computed -> ‹lifetime_value›) < 10.5
                  AND cdp.jsonb_timestamptz(p.traits -> ‹created_at›) > (timestamptz 'epoch' + 1780000000000000 * interval '1 microsecond')
                """)
    }

    @Test func conditionsThatHoldWithoutEventsUseTheComplement() throws {
        let never = try compile(Segment("never") { Event("Order Completed").never })
        #expect(
            never.hasSuffix(
                """
                WHERE p.profile_id NOT IN (
                    SELECT e.profile_id
                    FROM cdp.events AS e
                    WHERE e.profile_id IS NOT NULL
                      AND e.event = ‹Order Completed›
                )
                """))
        let few = try compile(Segment("few") { Event("$page").count < 3 })
        #expect(
            few.hasSuffix(
                """
                WHERE p.profile_id NOT IN (
                    SELECT e.profile_id
                    FROM cdp.events AS e
                    WHERE e.profile_id IS NOT NULL
                      AND e.type = 'page'
                    GROUP BY e.profile_id
                    HAVING NOT (count(*) < 3)
                )
                """))
        let perProfile = try compile(Segment("few") { Event("$page").count < 3 }, form: .perProfile)
        #expect(
            perProfile == """
                SELECT p.profile_id
                FROM cdp.profile_data AS p
                WHERE p.profile_id = ANY(‹{}›)
                  AND (
                    SELECT count(*)
                    FROM cdp.events AS e
                    WHERE e.profile_id = p.profile_id
                      AND e.type = 'page'
                ) < 3
                """)
    }

    @Test func funnelsAndNotSince() throws {
        let funnel = try compile(
            Segment("funnel") {
                Funnel(within: .days(7)) {
                    Event("Product Viewed")
                    Event("Order Completed") { Events.OrderCompleted.currency == "EUR" }
                }
            })
        #expect(
            funnel.hasSuffix(
                """
                WHERE p.profile_id IN (
                    SELECT s0.profile_id
                    FROM cdp.events AS s0
                    WHERE s0.profile_id IS NOT NULL
                      AND s0.event = ‹Product Viewed›
                      AND EXISTS (
                        SELECT 1
                        FROM cdp.events AS s1
                        WHERE s1.profile_id = s0.profile_id
                          AND (s1.timestamp, s1.seq) > (s0.timestamp, s0.seq)
                          AND s1.timestamp <= s0.timestamp + interval '24 hours' * 7
                          AND s1.event = ‹Order Completed›
                          AND s1.properties -> ‹currency› = ‹"EUR"›::jsonb
                    )
                )
                """))
        let abandoned = try compile(
            Segment("abandoned") {
                Event("Order Completed").notSince(Event("Product Added", within: .days(3)))
            }, form: .perProfile)
        #expect(
            abandoned == """
                SELECT p.profile_id
                FROM cdp.profile_data AS p
                WHERE p.profile_id = ANY(‹{}›)
                  AND EXISTS (
                    SELECT 1
                    FROM cdp.events AS y
                    WHERE y.profile_id = p.profile_id
                      AND y.event = ‹Product Added›
                      AND y.timestamp > now() - interval '24 hours' * 3
                      AND NOT EXISTS (
                        SELECT 1
                        FROM cdp.events AS x
                        WHERE x.event = ‹Order Completed›
                          AND x.profile_id = y.profile_id
                          AND (x.timestamp, x.seq) > (y.timestamp, y.seq)
                    )
                )
                """)
    }

    @Test func segmentReferencesAreInlinedAndFixedClocksAreLiterals() throws {
        let vip = Segment("vip") { Traits.plan == "pro" }
        let active = Segment("active vip") {
            InSegment("vip")
            Event("Order Completed", within: .days(1)).occurred
        }
        let compiler = SegmentCompiler(SegmentDefinitions([vip, active]), clock: .fixed(Self.moment))
        #expect(
            shown(try compiler.predicate("active vip", form: .view)!) == """
                p.traits -> ‹plan› = ‹"pro"›::jsonb
                  AND p.profile_id IN (
                    SELECT e.profile_id
                    FROM cdp.events AS e
                    WHERE e.profile_id IS NOT NULL
                      AND e.event = ‹Order Completed›
                      AND e.timestamp > (timestamptz 'epoch' + 1780000000000000 * interval '1 microsecond') - interval '24 hours' * 1
                )
                """)
        #expect(try compiler.viewName("active vip") == #""segments"."active vip""#)
    }

    @Test func postgresQuotingDoublesQuotesAndEscapesBackslashes() throws {
        let hostile = Segment(#"x"; DROP TABLE cdp.events; --"#) {
            Trait<String>(#"it's \ "odd""#) == #"'); DELETE FROM cdp.events; --\"#
        }
        let sql = try SegmentCompiler(SegmentDefinitions([hostile])).createView(hostile.name).sql
        #expect(sql.hasPrefix(#"CREATE OR REPLACE VIEW "segments"."x""; DROP TABLE cdp.events; --" AS"#))
        #expect(sql.contains(#"p.traits ->  E'it''s \\ "odd"' =  E'"''); DELETE FROM cdp.events; --\\\\"'::jsonb"#), "\(sql)")
    }
}

@Suite struct SegmentDefinitionTests {
    static let catalog = Catalog(
        traits: ["plan": .init(type: .string), "age": .init(type: .integer)],
        events: ["Order Completed": .init(properties: ["revenue": .init(type: .double), "currency": .init(type: .string)])])

    func parse(_ json: String, computed: ComputedTraitDefinitions? = ComputedTraitDefinitions()) throws -> SegmentDefinitions {
        try SegmentDefinitions.parse(Data(json.utf8), catalog: Self.catalog, computed: computed)
    }

    func error(_ json: String, computed: ComputedTraitDefinitions? = ComputedTraitDefinitions()) -> String {
        do {
            _ = try parse(json, computed: computed)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func jsonRoundTripsEveryKind() throws {
        let segments = SegmentDefinitions([
            Segment("vip", description: "Paying", realtime: true, fields: [.trait("email"), .computed("rfm_score", as: "score")])
            {
                Traits.plan == "pro"
                Traits.age.isIn([18, 21])
                Computed<Int>("rfm_frequency") >= 4
                AnyOf {
                    Event("Order Completed", within: .days(30)) { Events.OrderCompleted.revenue > 10.0 }.count >= 2
                    Event("Order Completed").max(Events.OrderCompleted.revenue) > 99.5
                }
                Not { Traits.plan.isNull }
            },
            Segment("later") {
                InSegment("vip")
                Funnel(within: .days(2)) {
                    Event("Product Viewed")
                    Event("Order Completed")
                }
                Event("Order Completed").notSince(Event("Product Added"))
            },
        ])
        let data = try segments.encoded()
        #expect(try parse(String(decoding: data, as: UTF8.self)) == segments)
        // The file form is stable: encoding what was read gives the same bytes.
        #expect(try parse(String(decoding: data, as: UTF8.self)).encoded() == data)
    }

    @Test func eventConditionsDefaultToAtLeastOne() throws {
        let read = try parse(#"{"segments": [{"name": "a", "conditions": [{"event": {"name": "Order Completed"}}]}]}"#)
        #expect(read.segments[0].conditions == [Event("Order Completed").occurred])
    }

    @Test func errorsGiveThePathOfTheProblem() {
        let cases: [(String, String)] = [
            (
                #"{"segments": [{"name": "a", "conditions": [{"trait": "plan", "op": "=", "value": "x"}, {"trait": "plan", "op": "=", "value": "y"}, {"event": {"name": "Order Completed", "where": [{"property": "revenue", "op": ">", "value": "100"}]}}]}]}"#,
                "segments[0].conditions[2].event.where[0].value: operator '>' needs a number or an ISO 8601 timestamp, got '100'"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"event": {"name": "Order Completed", "where": [{"property": "revenue", "op": "=", "value": "100"}]}}]}]}"#,
                "segments[0].conditions[0].event.where[0]: property 'revenue' is Double, got string"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"trait": "age", "op": "=", "value": "ten"}]}]}"#,
                "segments[0].conditions[0]: trait 'age' is Int, got string"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"anyOf": [{"trait": "plan", "op": "contains", "value": 3}]}]}]}"#,
                "segments[0].conditions[0].anyOf[0].value: 'contains' needs a string, got number"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"computed": "ltv", "op": ">", "value": 3}]}]}"#,
                "segments[0].conditions[0].computed: unknown computed trait 'ltv' (defined: rfm_recency, rfm_frequency, rfm_monetary, rfm_score)"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"segment": "b"}]}, {"name": "b", "conditions": [{"not": {"segment": "a"}}]}]}"#,
                "segments[0].conditions: 'a' refers back to itself through a → b → a"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"segment": "zzz"}]}]}"#,
                "segments[0].conditions[0].segment: unknown segment 'zzz' (a segment can only refer to segments in the same file)"
            ),
            (#"{"segments": [{"name": "a"}, {"name": "a"}]}"#, "segments[1].name: 'a' is already the name of segments[0]"),
            // Refused by the one JSON parser of every file and body, before any definition is read.
            (
                #"{"segments": [{"name": "a\u0000b"}]}"#,
                #"(document): not valid JSON (invalid JSON at byte 31: \u0000 is not allowed (PostgreSQL cannot store NUL characters))"#
            ),
            (#"{"segments": [{"name": "a", "name": "b"}]}"#, "segments[0].name: given twice"),
            (
                #"{"segments": [{"name": "a", "conditions": [{"event": {"name": "x", "within": {"days": 2.5}}}]}]}"#,
                "segments[0].conditions[0].event.within.days: must be an integer"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"funnel": {"steps": [{"name": "x"}], "within": {"days": 1}}}]}]}"#,
                "segments[0].conditions[0].funnel.steps: a funnel needs at least two steps"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"event": {"name": "x", "within": {"days": 0}}}]}]}"#,
                "segments[0].conditions[0].event.within.days: must be between 1 and 36500, got 0"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"event": {"name": "Order Completed"}, "aggregate": "sum", "property": "currency", "op": ">", "value": 1}]}]}"#,
                "segments[0].conditions[0].property: aggregate 'sum' needs a number; property 'currency' is String"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"event": {"name": "x"}, "op": "in", "value": 1}]}]}"#,
                "segments[0].conditions[0].op: an event aggregate is compared with =, !=, >, >=, < or <=, not 'in'"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"trait": "plan", "computed": "x", "op": "=", "value": 1}]}]}"#,
                "segments[0].conditions[0]: a condition has exactly one of the keys trait, computed"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"trait": "plan", "op": "=", "vaule": 1}]}]}"#,
                "segments[0].conditions[0].vaule: unknown key; known keys are trait, op, value"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"trait": "plan", "op": "like", "value": 1}]}]}"#,
                "segments[0].conditions[0].op: unknown operator 'like'; use =, !=, >, >=, <, <=, in, contains, exists, not_exists"
            ),
            (
                #"{"segments": [{"name": "a", "fields": [{"name": "Email", "trait": "email"}]}]}"#,
                "segments[0].fields[0].name: 'Email' is not a valid column name ([a-z_][a-z0-9_]*, at most 63 bytes)"
            ),
            (
                #"{"segments": [{"name": "a", "conditions": [{"trait": "plan", "op": ">", "value": "2026-13-01"}]}]}"#,
                "segments[0].conditions[0].value: operator '>' needs a number or an ISO 8601 timestamp, got '2026-13-01'"
            ),
            (
                #"{"segments": [{"name": "\#(String(repeating: "n", count: 64))"}]}"#,
                "segments[0].name: '\(String(repeating: "n", count: 64))' is 64 bytes long; a segment name is a view name, at most 63 bytes"
            ),
        ]
        for (json, expected) in cases {
            #expect(error(json) == expected, "\(json)")
        }
    }

    @Test func comparingAStringTraitWithANumberDoesNotCompile() async throws {
        // The test runner lives next to the modules it was built with.
        let swiftc = try #require(ProcessRunner.which("swiftc"), "swiftc is needed to type-check")
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        while !FileManager.default.fileExists(
            atPath: directory.appendingPathComponent("Modules/TributaryModel.swiftmodule").path),
            directory.path != "/"
        {
            directory.deleteLastPathComponent()
        }
        let modules = directory.appendingPathComponent("Modules").path
        try #require(
            FileManager.default.fileExists(atPath: modules + "/TributaryModel.swiftmodule"),
            "no built TributaryModel module near \(CommandLine.arguments[0])")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let libpq = root.appendingPathComponent("Sources/CLibPQ/module.modulemap").path
        // The module map includes libpq-fe.h, found where pkg-config says (as SwiftPM does for the build).
        let pkgConfig = try #require(ProcessRunner.which("pkg-config"), "pkg-config finds libpq's headers")
        let cflags = try await ProcessRunner.runDetached(pkgConfig, ["--cflags-only-I", "libpq"])
        let includes = cflags.text.split(whereSeparator: \.isWhitespace).flatMap { ["-Xcc", String($0)] }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("segment-dsl-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        func typecheck(_ body: String) async throws -> (Int32, String) {
            try "import Foundation\nimport TributaryModel\n\(body)\n".write(
                to: scratch.appendingPathComponent("use.swift"), atomically: true, encoding: .utf8)
            let output = try await ProcessRunner.runDetached(
                swiftc, ["-typecheck", "-I", modules, "-Xcc", "-fmodule-map-file=\(libpq)"] + includes + ["use.swift"],
                directory: scratch.path)
            return (output.status, output.text)
        }
        let good = try await typecheck(
            """
            let s = Segment("ok") {
                Trait<Int>("age") > 3
                Trait<String>("plan") == "pro"
                Trait<Date>("created_at") > Date()
                Event("Order Completed").sum(Property<Double>("revenue")) > 100
            }
            """)
        #expect(good.0 == 0, "\(good.1)")
        for bad in [
            #"let c: SegmentCondition = Trait<String>("plan") > 3"#,
            #"let c: SegmentCondition = Trait<String>("plan") == 3"#,
            #"let c: SegmentCondition = Event("x").sum(Property<String>("currency")) > 3"#,
            #"let c: SegmentCondition = Trait<Bool>("vip") < true"#,
        ] {
            let result = try await typecheck(bad)
            #expect(result.0 != 0 && result.1.contains("error:"), "\(bad) type-checked")
        }
    }
}
