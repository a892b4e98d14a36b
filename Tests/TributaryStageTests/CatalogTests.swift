import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryModel
@testable import TributaryProfiles

/// The typed catalog without a database: the file format and its errors, derived names, merging, generated Swift.
@Suite struct CatalogTests {
    func parse(_ json: String) throws(CatalogError) -> Catalog { try Catalog.parse(Data(json.utf8)) }

    func expectError(_ json: String, _ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try parse(json)
            Issue.record("no error for \(json)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.description == message, sourceLocation: sourceLocation)
        }
    }

    static let reserved = "profile_id, traits, computed_traits, first_seen_at, last_seen_at, event_count, updated_at"
    static let types = "expected one of string, integer, double, boolean, timestamp, object, array"

    @Test func badCatalogsNameThePathAndTheProblem() {
        expectError(#"{"traits": {"age": {"type": "int"}}}"#, "traits.age.type: unknown type 'int' (\(Self.types))")
        expectError(#"{"traits": {"age": {}}}"#, "traits.age.type: required (\(Self.types))")
        expectError(#"{"traits": {"age": {"type": 3}}}"#, "traits.age.type: must be a string (\(Self.types))")
        expectError(
            #"{"traits": {"plan": {"type": "string", "column": "bad name"}}}"#,
            "traits.plan.column: 'bad name' is not a valid column name ([a-z_][a-z0-9_]*, at most 63 bytes)")
        expectError(
            #"{"traits": {"plan": {"type": "string", "column": "\#(String(repeating: "p", count: 64))"}}}"#,
            "traits.plan.column: '\(String(repeating: "p", count: 64))' is not a valid column name ([a-z_][a-z0-9_]*, at most 63 bytes)"
        )
        expectError(
            #"{"traits": {"a": {"type": "string", "column": "x"}, "b": {"type": "integer", "column": "x"}}}"#,
            "traits.b.column: 'x' is also the column of traits.a")
        expectError(
            #"{"traits": {"first_name": {"type": "string"}, "firstName": {"type": "string"}}}"#,
            #"traits.first_name: the column 'first_name' derived from the key is also the column of traits.firstName; set "column""#
        )
        expectError(
            #"{"traits": {"traits": {"type": "object"}}}"#,
            #"traits.traits: the column 'traits' derived from the key is reserved: cdp.profiles always has the columns \#(Self.reserved); set "column""#
        )
        expectError(
            #"{"traits": {"visits": {"type": "integer", "column": "event_count"}}}"#,
            "traits.visits.column: 'event_count' is reserved: cdp.profiles always has the columns \(Self.reserved)")
        expectError(
            #"{"traits": {"age": {"type": "integer", "colour": "red"}}}"#,
            "traits.age.colour: unknown key; known keys are type, column, description, pii")
        expectError(#"{"trait": {}}"#, "trait: unknown key; known keys are traits, events")
        expectError(
            #"{"events": {"Order Completed": {"properties": {"revenue": {"type": "double", "column": "r"}}}}}"#,
            #"events["Order Completed"].properties.revenue.column: unknown key; known keys are type, description, pii"#)
        expectError(
            #"{"events": {"Signed Up": {"props": {}}}}"#, #"events["Signed Up"].props: unknown key; known keys are properties"#)
        expectError(#"{"events": {"x": 1}}"#, "events.x: must be an object")
        expectError(#"{"events": {"x": {"properties": []}}}"#, "events.x.properties: must be an object")
        expectError(#"{"traits": {"email": {"type": "string", "pii": "yes"}}}"#, "traits.email.pii: must be true or false")
        expectError(#"{"traits": {"email": {"type": "string", "description": 1}}}"#, "traits.email.description: must be a string")
        expectError(#"{"traits": {"a": {"type": "string"}, "a": {"type": "integer"}}}"#, "traits.a: given more than once")
        expectError(#"{"traits": {}, "traits": {}}"#, "traits: given more than once")
        expectError(#"{"traits": {"": {"type": "string"}}}"#, "traits: a trait key must not be empty")
        expectError(#"{"events": {"": {}}}"#, "events: an event name must not be empty")
        expectError(
            #"{"events": {"x": {"properties": {"": {"type": "string"}}}}}"#,
            "events.x.properties: a property key must not be empty")
        expectError(#"{"traits": {"a\"b.c": {"type": "nope"}}}"#, #"traits["a\"b.c"].type: unknown type 'nope' (\#(Self.types))"#)
        expectError(
            #"{"traits": {"a": {"type": "string", "column": "x\ny"}}}"#,
            #"traits.a.column: 'x\ny' is not a valid column name ([a-z_][a-z0-9_]*, at most 63 bytes)"#)
        expectError(#"{"traits": {"a": {"type": "int\u0007"}}}"#, #"traits.a.type: unknown type 'int\u{07}' (\#(Self.types))"#)
        expectError(#"["traits"]"#, "catalog: must be a JSON object")
        expectError(#"{"traits": {"#, "catalog: invalid JSON at byte 12: unexpected end of input in an object")
    }

    @Test func catalogsParseAnswerQuestionsAndRoundTrip() throws {
        let catalog = try parse(
            """
            {"traits": {"lifetime_value": {"type": "double", "column": "ltv", "description": "Sum of orders"},
                        "firstName": {"type": "string", "pii": true}, "plan": {"type": "string", "pii": null}},
             "events": {"Order Completed": {"properties": {"revenue": {"type": "double"}}}, "$page": {}}}
            """)
        #expect(catalog.traitType("lifetime_value") == .double && catalog.traitType("nope") == nil)
        #expect(catalog.propertyType(event: "Order Completed", key: "revenue") == .double)
        #expect(
            catalog.propertyType(event: "Order Completed", key: "tax") == nil
                && catalog.propertyType(event: "x", key: "revenue") == nil)
        #expect(
            catalog.columnName(forTrait: "lifetime_value") == "ltv" && catalog.columnName(forTrait: "firstName") == "first_name")
        #expect(catalog.columnName(forTrait: "nope") == nil)
        #expect(catalog.traits["plan"] == Catalog.FieldSpec(type: .string), "null is the same as absent")
        #expect(catalog.events["$page"] == Catalog.EventSpec())
        #expect(try Catalog.parse(catalog.encoded()) == catalog)
        #expect(try parse("{}") == Catalog())
        let canonical = catalog.canonical
        #expect(canonical.traits["firstName"]?.column == "first_name" && canonical.traits["lifetime_value"]?.column == "ltv")
        #expect(catalog.changes(from: canonical).isEmpty, "a derived column equals the same column written out")
        let text = String(decoding: try catalog.encoded(), as: UTF8.self)
        #expect(
            text.hasPrefix("{\n  \"events\" : {\n    \"$page\" : {") && text.hasSuffix("}\n"), "pretty-printed with sorted keys")
    }

    @Test func columnNamesAreDerivedFromAnyKey() {
        let cases = [
            "firstName": "first_name", "Lifetime Value": "lifetime_value", "lifetime-value": "lifetime_value",
            "LIFETIME_VALUE": "lifetime_value", "HTTPStatus": "http_status", "userID": "user_id", "address2Line": "address2_line",
            "2fa": "_2fa", "café au lait": "cafe_au_lait", #"O'Brien "quoted" \ -- ; DROP"#: "o_brien_quoted_drop", "a--b": "a_b",
            "日本語": "trait", "--": "trait", "": "trait", "_x_": "x",
            String(repeating: "ab", count: 40): String(repeating: "ab", count: 40).prefix(63).description,
        ]
        for (key, column) in cases {
            #expect(CatalogNames.column(forKey: key) == column, "\(key)")
            #expect(Catalog.isValidColumnName(CatalogNames.column(forKey: key)))
        }
    }

    @Test func swiftNamesAreDerivedFromAnyKey() {
        func lower(_ key: String) -> String {
            CatalogNames.escaped(CatalogNames.swiftName(key, upperCamel: false, fallback: "trait"))
        }
        func upper(_ key: String) -> String {
            CatalogNames.escaped(CatalogNames.swiftName(key, upperCamel: true, fallback: "Event"))
        }
        #expect(
            lower("lifetime_value") == "lifetimeValue" && lower("Lifetime Value") == "lifetimeValue"
                && lower("firstName") == "firstName")
        #expect(lower("userID") == "userId" && lower("HTTPStatus") == "httpStatus" && lower("café") == "cafe")
        #expect(
            upper("Order Completed") == "OrderCompleted" && upper("order_completed") == "OrderCompleted"
                && upper("$page") == "Page")
        #expect(
            lower("class") == "`class`" && lower("self") == "`self`" && lower("default") == "`default`" && upper("any") == "`Any`"
        )
        #expect(lower("2fa") == "_2fa" && upper("2024 Sale") == "_2024Sale")
        #expect(
            lower(#""quoted" \ --"#) == "quoted" && lower("日本語") == "trait" && lower("--") == "trait" && upper("🌊") == "Event")
        let names = CatalogSwiftGenerator.names(
            for: ["first_name", "firstName", "FIRST NAME", "firstName2", "name"], upperCamel: false,
            fallback: "property", reserved: ["name"])
        #expect(
            names.map(\.name) == ["firstName", "firstName2", "firstName22", "firstName3", "name2"],
            "sorted keys: FIRST NAME, firstName, firstName2, first_name, name; `name` is reserved")
    }

    @Test func stringLiteralsAndCommentsAreEscaped() {
        #expect(CatalogSwiftGenerator.literal("Order \"Completed\"") == #""Order \"Completed\"""#)
        #expect(CatalogSwiftGenerator.literal(#"a\b"#) == #""a\\b""#)
        #expect(CatalogSwiftGenerator.literal("a\nb\r\tc") == #""a\nb\r\tc""#)
        #expect(CatalogSwiftGenerator.literal("\u{202E}x\u{0}\u{2028}") == #""\u{202e}x\u{0}\u{2028}""#)
        #expect(CatalogSwiftGenerator.literal("日本語 🌊 é") == "\"日本語 🌊 é\"")
        #expect(CatalogSwiftGenerator.literal(#"\(x)"#) == #""\\(x)""#)
        #expect(CatalogSwiftGenerator.commentSafe("a\u{2028}b\u{85}c\u{202E}") == "a b c ")
    }

    @Test func generatedSourceIsStable() throws {
        let catalog = try parse(
            """
            {"traits": {"lifetime_value": {"type": "double", "description": "Sum of orders\\nin USD"}, "email": {"type": "string", "pii": true}},
             "events": {"Order Completed": {"properties": {"revenue": {"type": "double"}, "at": {"type": "timestamp"}}}}}
            """)
        let source = CatalogSwiftGenerator.source(for: catalog)
        #expect(
            source == """
                // Generated by `tributary catalog infer` from the typed catalog.
                // Do not edit by hand: edit the catalog file, then run the command again with --merge to keep your edits.
                import Foundation
                import TributaryModel

                /// Profile traits of the typed catalog.
                public enum Traits {
                    /// Personal data (PII).
                    public static let email = TributaryModel.Trait<Swift.String>("email")
                    /// Sum of orders
                    /// in USD
                    public static let lifetimeValue = TributaryModel.Trait<Swift.Double>("lifetime_value")
                }

                /// Events of the typed catalog, with their properties.
                public enum Events {
                    /// Order Completed
                    public enum OrderCompleted {
                        public static let name = "Order Completed"
                        public static let at = TributaryModel.Property<Foundation.Date>("at", event: "Order Completed")
                        public static let revenue = TributaryModel.Property<Swift.Double>("revenue", event: "Order Completed")
                    }
                }

                """)
        #expect(CatalogSwiftGenerator.source(for: catalog) == source)
        #expect(CatalogSwiftGenerator.source(for: catalog, command: "x\ny").hasPrefix("// Generated by `x y` from"))
    }

    /// Every hostile key the generator must survive, for the type-check.
    static let hostile: Catalog = {
        let keys = [
            "class", "self", "Self", "init", "2fa", #""quoted" \ back"#, "first_name", "firstName", "日本語", "🌊",
            "x\ny", "--", "Type", "name", "default", "lifetime_value", "\u{202E}rtl",
        ]
        let types = ValueType.allCases
        var traits: [String: Catalog.FieldSpec] = [:]
        var properties: [String: Catalog.FieldSpec] = [:]
        for (index, key) in keys.enumerated() {
            traits[key] = Catalog.FieldSpec(type: types[index % types.count], description: "about */ \(key)\n\u{2028}second line")
            properties[key] = Catalog.FieldSpec(type: types[(index + 3) % types.count], pii: index % 2 == 0)
        }
        traits["lifetime_value"]?.type = .double
        traits["2fa"]?.type = .timestamp
        let events = [
            "Order Completed", "Type", "Protocol", "Property", "Swift", "Foundation", "TributaryModel", "String",
            "Trait", "Events", "Traits", "日本語", "--", #"say "hi" \"#, "$page", "$screen", "class", "Any", "self",
        ]
        let catalog = Catalog(
            traits: traits,
            events: Dictionary(uniqueKeysWithValues: events.map { ($0, Catalog.EventSpec(properties: properties)) }))
        // Assigns distinct columns, as inference does.
        return catalog.merged(keeping: Catalog())
    }()

    @Test func generatedSwiftTypeChecks() async throws {
        let swiftc = try #require(ProcessRunner.which("swiftc"), "swiftc is needed to type-check the generated source")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "catalog-swift-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let generated = CatalogSwiftGenerator.source(
            for: Self.hostile, command: #"tributary catalog infer --swift "odd`name\".swift"#)
        #expect(generated.hasPrefix("// Generated by") && generated.contains("\nimport TributaryModel\n"))
        // The generated file alone, compiled as module TributaryModel against stand-ins for the types it uses.
        let files = [
            "Prelude.swift": """
            import Foundation
            public struct Trait<V> { public init(_ k: String) {} }
            public struct Property<V> { public init(_ k: String, event: String?) {} }
            public enum JSONObject {}
            public enum JSONArray {}
            """,
            "Catalog.swift": generated.replacingOccurrences(of: "\nimport TributaryModel\n", with: "\n"),
            // Names a user would write resolve to the right constants.
            "Use.swift": """
            import Foundation
            let uses: [Any] = [
                Traits.quotedBack, Traits.trait, Traits.`self`, Traits.type, Traits.`class`, Traits.`default`, Traits.firstName,
                Traits.firstName2, Traits.`init`, Traits.name, Traits.self2, Traits.xY, Traits.rtl, Traits.trait2, Traits.trait3,
                Events.Page.name, Events.Screen.name, Events.Event.name, Events.`Any`.name, Events.Events.name,
                Events.Foundation2.name, Events.OrderCompleted.name, Events.OrderCompleted.name2, Events.Property.firstName,
                Events.Protocol2.name, Events.String.name, Events.Swift2.name, Events.Trait.name, Events.Traits.name,
                Events.TributaryModel2.name, Events.Type2.lifetimeValue, Events.Class.name, Events.SayHi.name,
                Events.`Self`.self2, Events.Event2.property3, Events.Event.property,
            ]
            let lifetime: TributaryModel.Trait<Swift.Double> = Traits.lifetimeValue
            let twoFactor: TributaryModel.Trait<Foundation.Date> = Traits._2fa
            let pageName: Swift.String = Events.Page.name
            """,
        ]
        for (name, text) in files {
            try text.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        let output = try await ProcessRunner.runDetached(
            swiftc, ["-typecheck", "-module-name", "TributaryModel", "Prelude.swift", "Catalog.swift", "Use.swift"],
            directory: directory.path)
        #expect(output.status == 0, "\(output.text)\n\(generated)")
    }

    @Test func mergingKeepsWhatTheUserWroteAndAddsWhatIsNew() throws {
        let edited = try parse(
            """
            {"traits": {"age": {"type": "double", "column": "plan", "description": "years"}, "legacy": {"type": "string"}},
             "events": {"Order Completed": {"properties": {"revenue": {"type": "integer", "description": "cents"}}}}}
            """)
        let inferred = Catalog(
            traits: [
                "age": .init(type: .integer), "plan": .init(type: .string), "email": .init(type: .string, pii: true),
                "traits": .init(type: .object),
            ],
            events: [
                "Order Completed": .init(properties: ["revenue": .init(type: .double), "tax": .init(type: .double)]),
                "$page": .init(properties: ["path": .init(type: .string)]), "Signed Up": .init(),
            ])
        let merged = inferred.merged(keeping: edited)
        #expect(merged.traits["age"] == edited.traits["age"] && merged.traits["legacy"] == edited.traits["legacy"])
        #expect(merged.traits["plan"] == .init(type: .string, column: "plan_2"), "the user's age took the column plan")
        #expect(merged.traits["email"] == .init(type: .string, column: "email", pii: true))
        #expect(merged.traits["traits"]?.column == "traits_2", "reserved columns are avoided")
        #expect(
            merged.events["Order Completed"]?.properties["revenue"] == edited.events["Order Completed"]?.properties["revenue"])
        #expect(merged.events["Order Completed"]?.properties["tax"] == .init(type: .double))
        #expect(merged.events["$page"] == inferred.events["$page"] && merged.events["Signed Up"] == Catalog.EventSpec())
        try merged.validate()
        #expect(merged.merged(keeping: merged) == merged)
        #expect(
            merged.changes(from: edited).map(\.description) == [
                "+ traits.email: string", "+ traits.plan: string", "+ traits.traits: object",
                #"+ events["$page"]: 1 properties"#, #"+ events["Order Completed"].properties.tax: double"#,
                #"+ events["Signed Up"]: 0 properties"#,
            ])
    }

    @Test func obviousPersonalDataIsRecognized() {
        for key in [
            "email", "Email Address", "mobilePhone", "phone_number", "firstName", "last_name", "Full Name", "name",
            "billing_address", "street", "zip", "postalCode", "date_of_birth", "birthday", "ssn", "ip",
        ] {
            #expect(CatalogInference.looksLikePII(key), "\(key)")
        }
        for key in ["plan", "lifetime_value", "company", "emailed", "domain", "event_name", "ipad_user", "shipping_method"] {
            #expect(!CatalogInference.looksLikePII(key), "\(key)")
        }
    }
}

/// Inference and the catalog in force, against real PostgreSQL.
@Suite struct CatalogDatabaseTests {
    typealias F = IdentityFixture

    func event(
        _ type: CallType, _ name: String? = nil, properties: String = "{}", traits: String = "{}", context: String = "{}"
    ) -> IncomingEvent {
        IncomingEvent(
            messageID: UUID().uuidString, type: type, event: name, name: nil, userID: "u-1", anonymousID: nil, groupID: nil,
            previousID: nil, timestamp: Date(timeIntervalSince1970: 1_780_000_000), originalTimestamp: nil, sentAt: nil,
            receivedAt: Date(), properties: properties, traits: traits, context: context, integrations: "{}")
    }

    @Test func inferenceTypesTraitsAndPropertiesOfTheLatestEvents() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            #expect(try await CatalogInference.infer(client: client) == Catalog(), "no events, nothing to infer")
            try await F.write(
                [
                    event(
                        .identify,
                        traits: """
                            {"email": "a@x.com", "age": 31, "ltv": 10, "plan": "pro", "created": "2024-01-02T03:04:05Z", "gone": null,
                             "vip": true, "prefs": {"a": 1}, "tags": ["x"], "big": 99999999999999999999, "round": 1e3, "tie": 5, "": 1,
                             "traits": "x"}
                            """),
                    event(
                        .identify,
                        traits: """
                            {"ltv": 10.5, "age": 40, "created": "2024-02-03 00:00:00.123+02:00", "gone": null, "plan": null, "big": 1,
                             "round": 10.0, "tie": "five"}
                            """),
                    event(
                        .track, "Order Completed",
                        properties: #"{"revenue": 12, "currency": "USD", "at": "2024-01-02T03:04:05Z"}"#,
                        context: #"{"traits": {"firstName": "Jane", "mixed": 1}}"#),
                    event(
                        .track, "Order Completed",
                        properties: #"{"revenue": 12.5, "currency": "EUR", "at": "2024-13-02T03:04:05Z"}"#,
                        context: #"{"traits": {"mixed": "a"}}"#),
                    event(.track, "Order Completed", properties: #"{"revenue": null}"#, context: #"{"traits": {"mixed": "b"}}"#),
                    event(.track, "Signed Up", properties: #"{"gone": null}"#),
                    event(.track, "", properties: #"{"x": 1}"#),
                    event(.page, properties: #"{"path": "/x", "count": 1}"#),
                    event(.screen, properties: #"{"name": "Home", "day": "2024-01-02"}"#),
                    event(.group, traits: #"{"industry": "retail"}"#),
                ], client)
            let catalog = try await CatalogInference.infer(client: client)
            let types = catalog.traits.mapValues(\.type)
            #expect(
                types == [
                    "email": .string, "age": .integer, "ltv": .double, "plan": .string, "created": .timestamp, "vip": .boolean,
                    "prefs": .object, "tags": .array, "big": .double, "round": .double, "tie": .integer, "firstName": .string,
                    "mixed": .string, "traits": .string,
                ],
                "nulls ignored; group traits are not profile traits; integers and doubles make double; the most frequent JSON type wins"
            )
            #expect(
                catalog.traits["email"]?.pii == true && catalog.traits["firstName"]?.pii == true
                    && catalog.traits["age"]?.pii == nil)
            #expect(catalog.traits["firstName"]?.column == "first_name" && catalog.traits["traits"]?.column == "traits_2")
            #expect(
                catalog.events.mapValues { $0.properties.mapValues(\.type) } == [
                    "Order Completed": ["revenue": .double, "currency": .string, "at": .string], "Signed Up": [:],
                    "$page": ["path": .string, "count": .integer],
                    "$screen": ["name": .string, "day": .string],
                ])
            try catalog.validate()
            let latest = try await CatalogInference.infer(client: client, sample: 2)
            #expect(
                latest
                    == Catalog(events: [
                        "$screen": .init(properties: ["name": .init(type: .string), "day": .init(type: .string)])
                    ]),
                "only the two most recent events: the screen call and the group call")
            await #expect(throws: CatalogError("sample: must be at least 1, got 0")) {
                try await CatalogInference.infer(client: client, sample: 0)
            }
        }
    }

    @Test func applyStoresTheCanonicalCatalogOnceAndReportsWhatChanged() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            let store = CatalogStore(client: client)
            #expect(try await store.current() == nil)
            var catalog = try Catalog.parse(
                Data(
                    """
                    {"traits": {"firstName": {"type": "string", "pii": true}, "age": {"type": "integer"}},
                     "events": {"Order Completed": {"properties": {"revenue": {"type": "double"}}}}}
                    """.utf8))
            #expect(
                try await store.apply(catalog).map(\.description) == [
                    "+ traits.age: integer", "+ traits.firstName: string", #"+ events["Order Completed"]: 1 properties"#,
                ])
            #expect(try await store.current() == catalog.canonical)
            let stored: PostgresQuery =
                "SELECT document -> 'traits' -> 'firstName' ->> 'column', checksum, applied_at::text FROM cdp.profile_config"
            let (column, checksum, appliedAt) = try await client.query(stored)[0].decode((String, String, String).self)
            #expect(column == "first_name" && checksum.count == 64)
            #expect(try await store.apply(catalog).isEmpty, "applying it again changes nothing")
            #expect(try await store.apply(catalog.canonical).isEmpty, "nor does writing out the derived columns")
            #expect(try await client.query(stored)[0].decode((String, String, String).self) == (column, checksum, appliedAt))

            catalog.traits["age"] = .init(type: .double, description: "years")
            catalog.traits["firstName"]?.column = "given_name"
            catalog.events = [:]
            #expect(
                try await store.apply(catalog).map(\.description) == [
                    "~ traits.age: type integer → double, description changed",
                    "~ traits.firstName: column first_name → given_name",
                    #"- events["Order Completed"]: 1 properties"#,
                ])
            var invalid = catalog
            invalid.traits["visits"] = .init(type: .integer, column: "event_count")
            await #expect(throws: CatalogError.self) { try await store.apply(invalid) }
            #expect(try await store.current() == catalog.canonical)
        }
    }
}
