import Crypto
import Foundation
import LocalReceiver
import Postgres
import PostgresTesting
import Testing
@testable import TributaryDestinations
@testable import TributaryGovernance
@testable import TributaryModel
@testable import TributarySyncs

/// Helpers for the Braze and Meta destination tests: contexts, changes, decoding what the receiver saw.
enum Marketing {
    static let brazeKey = "braze-secret-key-5f1c"
    static let metaToken = "EAAB-meta-secret-token-77"

    static func json(_ text: String) throws -> JSONValue { try JSONParser.parse(Array(text.utf8)) }

    static func context(_ settings: String, environment: [String: String] = [:]) throws -> DestinationContext {
        DestinationContext(sync: "marketing", runID: 7, settings: try json(settings), environment: environment)
    }

    static func braze(_ base: String, _ extra: String = "") throws -> BrazeDestination {
        try BrazeDestination(
            context(
                """
                {"type": "braze", "endpoint": "\(base)/", "apiKey": "env:BRAZE_API_KEY"\(extra)}
                """, environment: ["BRAZE_API_KEY": brazeKey]),
            sender: HTTPSender())
    }

    static func meta(_ base: String, _ extra: String = "") throws -> MetaAudienceDestination {
        try MetaAudienceDestination(
            context(
                """
                {"type": "meta_audience", "audienceId": "23850001", "accessToken": "env:META_ACCESS_TOKEN",
                 "graphURL": "\(base)/v19.0"\(extra)}
                """, environment: ["META_ACCESS_TOKEN": metaToken]),
            sender: HTTPSender())
    }

    static func change(_ operation: SyncOperation, _ key: String, _ fields: String) throws -> SyncChange {
        SyncChange(operation: operation, key: try json(key), fields: try json(fields), idempotencyKey: UUID().uuidString)
    }

    /// SHA-256 as lower-case hex, computed here independently of the destination.
    static func sha256(_ text: String) -> String {
        Array(SHA256.hash(data: Data(text.utf8))).map { byte in
            let digits = Array("0123456789abcdef")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]])
        }.joined()
    }

    /// An `application/x-www-form-urlencoded` body as name → value.
    static func form(_ text: String) -> [String: String] {
        var values: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map {
                String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
            }
            values[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        return values
    }

    /// The `payload` of a Meta request, parsed.
    static func payload(_ request: TestReceiver.Request) throws -> JSONValue { try json(form(request.text)["payload"] ?? "") }

    /// A Meta answer counting every row received (as a sync would see it go well).
    static func metaAnswer(_ request: TestReceiver.Request, invalid: String = "{}") -> TestReceiver.Answer {
        let rows: Int = if case .array(let data)? = (try? payload(request))?["data"] { data.count } else { 0 }
        return TestReceiver.Answer(
            body: """
                {"audience_id": "23850001", "session_id": "1", "num_received": \(rows), "num_invalid_entries": 0, "invalid_entry_samples": \(invalid)}
                """)
    }

    /// The error `body` throws, if it throws a `DestinationError`.
    static func destinationError(_ body: () async throws -> Void) async -> DestinationError? {
        do {
            try await body()
            return nil
        } catch let error as DestinationError {
            return error
        } catch {
            Issue.record("expected a DestinationError, got \(error)")
            return nil
        }
    }

    static func validationError(_ settings: String, _ validate: (JSONValue) throws -> Void) throws -> String? {
        do {
            try validate(try json(settings))
            return nil
        } catch let error as SyncError {
            return error.description
        }
    }
}

@Suite struct MarketingDestinationTests {
    typealias M = Marketing

    // MARK: Braze

    @Test func brazeTrackRequestFollowsTheDocumentedFormat() async throws {
        let receiver = TestReceiver { _ in .init(status: 201, body: #"{"message": "success", "attributes_processed": 3}"#) }
        try await receiver.serve { base in
            let destination = try M.braze(base)
            #expect(destination.maxBatchSize == 75)
            let results = try await destination.send([
                try M.change(.upsert, #"{"customer_id": "c1"}"#, #"{"first_name": "Jane", "plan": "pro", "score": 12.5}"#),
                try M.change(.update, #"{"customer_id": "c2"}"#, #"{"plan": "free", "nickname": null}"#),
                try M.change(.insert, #"{"customer_id": 42}"#, #"{"plan": "team"}"#),
            ])
            #expect(results == [.delivered, .delivered, .delivered])
        }
        let requests = await receiver.requests
        try #require(requests.count == 1)
        let request = requests[0]
        #expect(request.method == "POST" && request.path == "/users/track" && request.query.isEmpty)
        #expect(request.header("Authorization") == "Bearer \(M.brazeKey)")
        #expect(request.header("Content-Type") == "application/json")
        #expect(
            try M.json(request.text)
                == M.json(
                    """
                    {"attributes": [
                      {"external_id": "c1", "first_name": "Jane", "plan": "pro", "score": 12.5},
                      {"external_id": "c2", "_update_existing_only": true, "plan": "free", "nickname": null},
                      {"external_id": "42", "plan": "team"}
                    ]}
                    """))
    }

    @Test func brazeAudienceModeSetsTheBooleanAttribute() async throws {
        let receiver = TestReceiver { _ in .init(status: 201, body: #"{"message": "success"}"#) }
        try await receiver.serve { base in
            // externalIdField names a field: it becomes external_id and is not sent again as an attribute.
            let destination = try M.braze(base, #", "externalIdField": "user_id", "audienceAttribute": "in_vip_segment""#)
            let results = try await destination.send([
                try M.change(.add, #"{"profile_id": "p1"}"#, #"{"user_id": "u1", "email": "a@example.com"}"#),
                try M.change(.remove, #"{"profile_id": "p2"}"#, #"{"user_id": "u2", "email": "b@example.com"}"#),
                try M.change(.add, #"{"profile_id": "p3"}"#, #"{"email": "c@example.com"}"#),
            ])
            #expect(results == [.delivered, .delivered, .rejected("no external_id: 'user_id' is missing or null")])

            // Without audienceAttribute an add is a plain attributes update and a remove has nothing to do: rejected.
            let plain = try M.braze(base)
            let plainResults = try await plain.send([
                try M.change(.add, #"{"profile_id": "p4"}"#, #"{"email": "d@example.com"}"#),
                try M.change(.remove, #"{"profile_id": "p5"}"#, #"{"email": "e@example.com"}"#),
            ])
            #expect(plainResults[0] == .delivered)
            #expect(
                plainResults[1] == .rejected("remove needs destination.audienceAttribute (the boolean attribute to set to false)")
            )
        }
        let requests = await receiver.requests
        try #require(requests.count == 2)
        #expect(
            try M.json(requests[0].text)
                == M.json(
                    """
                    {"attributes": [
                      {"external_id": "u1", "email": "a@example.com", "in_vip_segment": true},
                      {"external_id": "u2", "in_vip_segment": false}
                    ]}
                    """))
        #expect(try M.json(requests[1].text) == M.json(#"{"attributes": [{"external_id": "p4", "email": "d@example.com"}]}"#))
    }

    @Test func brazeSplitsAt75AttributesAnd50Deletes() async throws {
        let receiver = TestReceiver { request in
            request.path == "/users/delete"
                ? .init(status: 201, body: #"{"deleted": 1, "message": "success"}"#)
                : .init(status: 201, body: #"{"message": "success"}"#)
        }
        try await receiver.serve { base in
            let destination = try M.braze(base)
            // 100 upserts then 60 deletes: /users/track with 75 and 25, then /users/delete with 50 and 10.
            var batch: [SyncChange] = []
            for i in 0..<100 { batch.append(try M.change(.upsert, #"{"id": "u\#(i)"}"#, #"{"n": \#(i)}"#)) }
            for i in 100..<160 { batch.append(try M.change(.delete, #"{"id": "u\#(i)"}"#, #"{"n": \#(i)}"#)) }
            let results = try await destination.send(batch)
            #expect(results.count == 160 && results.allSatisfy { $0 == .delivered })

            // 160 upserts: 75, 75, 10.
            let upserts = try (0..<160).map { try M.change(.upsert, #"{"id": "v\#($0)"}"#, "{}") }
            let more = try await destination.send(upserts)
            #expect(more.count == 160 && more.allSatisfy { $0 == .delivered })
        }
        let requests = await receiver.requests
        #expect(
            requests.map(\.path) == [
                "/users/track", "/users/track", "/users/delete", "/users/delete",
                "/users/track", "/users/track", "/users/track",
            ])
        #expect(requests.allSatisfy { $0.method == "POST" && $0.header("Authorization") == "Bearer \(M.brazeKey)" })
        func ids(_ request: TestReceiver.Request) throws -> [String] {
            let body = try M.json(request.text)
            if case .array(let ids)? = body["external_ids"] {
                return ids.compactMap { if case .string(let id) = $0 { id } else { nil } }
            }
            guard case .array(let attributes)? = body["attributes"] else { return [] }
            return attributes.compactMap { if case .string(let id)? = $0["external_id"] { id } else { nil } }
        }
        let counts = try requests.map { try ids($0).count }
        #expect(counts == [75, 25, 50, 10, 75, 75, 10])
        #expect(try ids(requests[0]).first == "u0" && ids(requests[1]).last == "u99")
        #expect(try ids(requests[2]) == (100..<150).map { "u\($0)" })
        #expect(try ids(requests[3]) == (150..<160).map { "u\($0)" })
        #expect(try M.json(requests[3].text).objectKeys == ["external_ids"])
    }

    @Test func brazeMinorErrorsRejectTheRowsTheyIndex() async throws {
        let receiver = TestReceiver { _ in
            .init(
                status: 201,
                body: """
                    {"attributes_processed": 2, "message": "success", "errors": [
                      {"type": "'external_id' or 'braze_id' or 'user_alias' is required", "input_array": "attributes", "index": 1}]}
                    """)
        }
        try await receiver.serve { base in
            let destination = try M.braze(base)
            let results = try await destination.send([
                try M.change(.upsert, #"{"id": "a"}"#, #"{"plan": "pro"}"#),
                try M.change(.upsert, #"{"id": ""}"#, #"{"plan": "pro"}"#),  // no external_id: rejected here, not sent
                try M.change(.upsert, #"{"id": "c"}"#, #"{"plan": "pro"}"#),  // position 1 of the request
                try M.change(.upsert, #"{"id": "d"}"#, #"{"plan": "pro"}"#),
            ])
            #expect(
                results == [
                    .delivered,
                    .rejected("no external_id: 'id' must be a non-empty string or a number"),
                    .rejected("'external_id' or 'braze_id' or 'user_alias' is required"),
                    .delivered,
                ])
        }
        let requests = await receiver.requests
        try #require(requests.count == 1)
        guard case .array(let attributes)? = try M.json(requests[0].text)["attributes"] else {
            Issue.record("no attributes"); return
        }
        #expect(attributes.map { $0["external_id"] } == [.string("a"), .string("c"), .string("d")])
    }

    @Test func brazeFatalStatusesFailTheBatchWithoutTheKey() async throws {
        let receiver = TestReceiver { request in
            request.path == "/users/delete"
                ? .init(status: 400, body: #"{"message": "The max number of external_ids and aliases per request was exceeded"}"#)
                : .init(status: 401, body: #"{"message": "Invalid API key: \#(M.brazeKey)"}"#)
        }
        try await receiver.serve { base in
            let destination = try M.braze(base)
            let unauthorized = await M.destinationError {
                _ = try await destination.send([try M.change(.upsert, #"{"id": "a"}"#, "{}")])
            }
            let error = try #require(unauthorized)
            #expect(!error.retryable)
            #expect(error.description.contains("HTTP 401 Unauthorized") && error.description.contains("Invalid API key"))
            #expect(!error.description.contains(M.brazeKey))

            let badRequest = await M.destinationError {
                _ = try await destination.send([try M.change(.delete, #"{"id": "a"}"#, "{}")])
            }
            #expect(badRequest?.retryable == false)
            #expect(badRequest?.description.contains("HTTP 400 Bad Request: The max number of external_ids") == true)
        }
    }

    @Test func brazeRateLimitIsRetryableWithRetryAfter() async throws {
        let receiver = TestReceiver { _ in
            .init(status: 429, headers: [("Retry-After", "7")], body: #"{"message": "Rate limited"}"#)
        }
        try await receiver.serve { base in
            let destination = try M.braze(base)
            let error = await M.destinationError {
                _ = try await destination.send([try M.change(.upsert, #"{"id": "a"}"#, "{}")])
            }
            #expect(error?.retryable == true)
            #expect(error?.retryAfter == .seconds(7))
            #expect(error?.description.contains(M.brazeKey) == false)
        }
    }

    @Test func brazeSettingsAreValidatedWithPathNamedErrors() async throws {
        let validate = BrazeDestination.validate
        #expect(
            try M.validationError(#"{"type": "braze", "endpoint": "https://rest.iad-01.braze.com"}"#, validate)
                == "destination.apiKey: required")
        #expect(
            try M.validationError(#"{"type": "braze", "apiKey": "env:BRAZE_API_KEY"}"#, validate)?
                .hasPrefix("destination.endpoint: required") == true)
        #expect(
            try M.validationError(#"{"type": "braze", "endpoint": "rest.iad-01.braze.com", "apiKey": "k"}"#, validate)?
                .hasPrefix("destination.endpoint: must be an https:// URL") == true)
        #expect(
            try M.validationError(#"{"type": "braze", "endpoint": "https://x", "apiKey": 5}"#, validate)
                == "destination.apiKey: must be a non-empty string")
        #expect(
            try M.validationError(#"{"type": "braze", "endpoint": "https://x", "apiKey": "k", "externalIdField": ""}"#, validate)
                == "destination.externalIdField: must be a non-empty string")
        #expect(
            try M.validationError(#"{"type": "braze", "endpoint": "https://x", "apiKey": "k", "apikey": "k"}"#, validate)?
                .hasPrefix("destination.apikey: unknown setting for braze") == true)
        #expect(
            try M.validationError(
                #"{"type": "braze", "endpoint": "https://x", "apiKey": "k", "audienceAttribute": "vip"}"#, validate) == nil)

        // Through the registry, as when a sync file is applied; and the secret's environment variable when built.
        let registry = DestinationRegistry.standard()
        #expect(registry.types.contains("braze") && registry.types.contains("meta_audience"))
        #expect(
            try M.validationError(#"{"type": "braze", "endpoint": "https://x"}"#, registry.validate)
                == "destination.apiKey: required")
        do {
            _ = try await registry.make(M.context(#"{"type": "braze", "endpoint": "https://x", "apiKey": "env:BRAZE_API_KEY"}"#))
            Issue.record("built without the environment variable")
        } catch let error as SyncError {
            #expect(error.description == "destination.apiKey: the environment variable BRAZE_API_KEY is not set")
        }
        let made = try await registry.make(M.context(#"{"type": "braze", "endpoint": "https://x", "apiKey": "k"}"#))
        #expect(made is BrazeDestination)
    }

    // MARK: Meta

    @Test func metaNormalizesAndHashesAsDocumented() throws {
        // Meta's own examples: hash("sha256", "mary@example.com") and hash("sha256", "15559876543").
        #expect(
            MetaAudienceDestination.sha256Hex("mary@example.com")
                == "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79")
        #expect(
            MetaAudienceDestination.sha256Hex("15559876543") == "1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e"
        )

        #expect(MetaAudienceDestination.normalizedEmail("  Jane.Doe@Example.COM ") == "jane.doe@example.com")
        #expect(MetaAudienceDestination.normalizedEmail("\tMARY@example.com\n") == "mary@example.com")
        #expect(MetaAudienceDestination.normalizedEmail("not an email") == nil)
        #expect(MetaAudienceDestination.normalizedEmail("@example.com") == nil)
        #expect(MetaAudienceDestination.normalizedEmail("   ") == nil)

        let phone = { (raw: String, code: String?) in MetaAudienceDestination.normalizedPhone(raw, defaultCountryCode: code) }
        #expect(phone("+1 (555) 987-6543", nil) == .success("15559876543"))
        #expect(phone("0044 7700 900123", nil) == .success("447700900123"))
        #expect(phone("+44 7700-900123 (mobile)", nil) == .success("447700900123"))
        #expect(phone("07700 900123", "44") == .success("447700900123"))
        #expect(phone("(555) 987-6543", "1") == .success("15559876543"))
        #expect(phone("07700 900123", nil) == .failure(.noCountryCode))
        #expect(phone("15559876543", nil) == .failure(.noCountryCode))
        #expect(phone("+12", nil) == .failure(.invalid))
        #expect(phone("+1234567890123456", nil) == .failure(.invalid))
    }

    @Test func metaAddRequestFollowsTheDocumentedFormat() async throws {
        let receiver = TestReceiver { M.metaAnswer($0) }
        try await receiver.serve { base in
            let destination = try M.meta(base)
            #expect(destination.maxBatchSize == 10_000)
            let results = try await destination.send([
                try M.change(
                    .add, #"{"profile_id": "p1"}"#, #"{"email": "  Jane.Doe@Example.COM ", "phone": "+1 (555) 987-6543"}"#),
                try M.change(.upsert, #"{"profile_id": "p2"}"#, #"{"email": "MARY@example.com"}"#),
                try M.change(.update, #"{"profile_id": "p3"}"#, #"{"email": null, "phone": "0044 7700 900123"}"#),
                try M.change(.insert, #"{"profile_id": "p4"}"#, #"{"name": "nobody"}"#),
            ])
            #expect(results == [.delivered, .delivered, .delivered, .rejected("no email or phone to match on")])
        }
        let requests = await receiver.requests
        try #require(requests.count == 1)
        let request = requests[0]
        #expect(request.method == "POST" && request.path == "/v19.0/23850001/users")
        #expect(request.query.isEmpty)  // the token travels in the body, never in the URL
        #expect(request.header("Content-Type") == "application/x-www-form-urlencoded")
        let form = M.form(request.text)
        #expect(Set(form.keys) == ["payload", "session", "access_token"])
        #expect(form["access_token"] == M.metaToken)
        #expect(
            try M.payload(request)
                == M.json(
                    """
                    {"schema": ["EMAIL", "PHONE"], "data": [
                      ["\(M.sha256("jane.doe@example.com"))", "\(M.sha256("15559876543"))"],
                      ["f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79", ""],
                      ["", "\(M.sha256("447700900123"))"]
                    ]}
                    """))
        let session = try M.json(form["session"] ?? "")
        #expect(session.objectKeys == ["session_id", "batch_seq", "last_batch_flag", "estimated_num_total"])
        #expect(session["batch_seq"] == .number("1") && session["last_batch_flag"] == .bool(true))
        #expect(session["estimated_num_total"] == .number("3"))
        if case .number(let id)? = session["session_id"] { #expect((Int64(id) ?? 0) > 0) } else { Issue.record("no session_id") }
    }

    /// A member whose email changed: the old email's hash is removed (DELETE) before the new one is added, the
    /// unchanged phone is not removed; through the sync runner, which hands the destination the fields last
    /// delivered.
    @Test func metaRemovesTheOldHashOfAChangedEmail() async throws {
        let receiver = TestReceiver { M.metaAnswer($0) }
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await SyncFixture.migrated(client)
                try await SyncFixture.customers(
                    client, [("c1", "old@example.com", "+15559876543", 1), ("c2", "two@example.com", "", 2)])
                try await SyncFixture.apply(
                    """
                    {"syncs": [{"name": "aud", "source": {"query": "SELECT id, email, plan AS phone FROM public.customers"},
                      "primaryKey": ["id"], "mode": "audience", "fields": {"email": "email", "phone": "phone"},
                      "destination": {"type": "meta_audience", "audienceId": "23850001", "accessToken": "env:META_ACCESS_TOKEN",
                                      "graphURL": "\(base)/v19.0"}}]}
                    """, client)
                let runner = SyncRunner(
                    client: client, logger: TestDatabase.logger, registry: .standard(),
                    environment: ["META_ACCESS_TOKEN": M.metaToken])
                let first = try await runner.run("aud")
                #expect(first.delivered == 2, "\(first)")
                try await SyncFixture.customers(client, [("c1", "NEW@example.com", "+15559876543", 1)])
                let before = await receiver.requests.count
                let second = try await runner.run("aud")
                #expect(second.changed == 1 && second.delivered == 1, "\(second)")
                let requests = Array(await receiver.requests.dropFirst(before))
                try #require(requests.count == 2)
                #expect(requests.map(\.method) == ["DELETE", "POST"])
                #expect(
                    try M.payload(requests[0])["data"]
                        == M.json(#"[["\#(M.sha256("old@example.com"))", ""]]"#), "only the identifier that changed")
                #expect(
                    try M.payload(requests[1])["data"]
                        == M.json(#"[["\#(M.sha256("new@example.com"))", "\#(M.sha256("15559876543"))"]]"#))
            }
        }
    }

    @Test func metaRemovalsUseDeleteAndCustomFields() async throws {
        let receiver = TestReceiver { M.metaAnswer($0) }
        try await receiver.serve { base in
            let destination = try M.meta(
                base, #", "emailField": "work_email", "phoneField": "mobile", "defaultCountryCode": "44""#)
            let results = try await destination.send([
                try M.change(.remove, #"{"id": 1}"#, #"{"work_email": "A@Example.com"}"#),
                try M.change(.delete, #"{"id": 2}"#, #"{"mobile": "07700 900123"}"#),
                try M.change(.add, #"{"id": 3}"#, #"{"email": "ignored@example.com"}"#),  // not the configured field
                try M.change(.add, #"{"id": 4}"#, #"{"work_email": "b@example.com"}"#),
                try M.change(.remove, #"{"id": 5}"#, #"{"work_email": "c@example.com"}"#),
            ])
            #expect(results == [.delivered, .delivered, .rejected("no email or phone to match on"), .delivered, .delivered])

            // Without defaultCountryCode a national number cannot be matched: the row says why.
            let strict = try M.meta(base)
            let strictResults = try await strict.send([try M.change(.add, #"{"id": 6}"#, #"{"phone": "07700 900123"}"#)])
            #expect(
                strictResults == [
                    .rejected(
                        "no email or phone to match on (the phone has no country code: write it as +<country code>… or set destination.defaultCountryCode)"
                    )
                ])
        }
        let requests = await receiver.requests
        #expect(requests.map(\.method) == ["DELETE", "POST", "DELETE"])  // runs in batch order; nothing for the rejected row
        #expect(requests.allSatisfy { $0.path == "/v19.0/23850001/users" && M.form($0.text)["access_token"] == M.metaToken })
        #expect(
            try M.payload(requests[0])["data"]
                == M.json(
                    """
                    [["\(M.sha256("a@example.com"))", ""], ["", "\(M.sha256("447700900123"))"]]
                    """))
        #expect(try M.payload(requests[1])["data"] == M.json(#"[["\#(M.sha256("b@example.com"))", ""]]"#))
        #expect(try M.payload(requests[2])["data"] == M.json(#"[["\#(M.sha256("c@example.com"))", ""]]"#))
    }

    @Test func metaSplitsAt10000Rows() async throws {
        let receiver = TestReceiver { M.metaAnswer($0) }
        try await receiver.serve { base in
            let destination = try M.meta(base)
            let batch = try (0..<10_001).map { try M.change(.add, #"{"id": \#($0)}"#, #"{"email": "user\#($0)@example.com"}"#) }
            let results = try await destination.send(batch)
            #expect(results.count == 10_001 && results.allSatisfy { $0 == .delivered })
        }
        let requests = await receiver.requests
        let sizes: [Int] = try requests.map { if case .array(let data)? = try M.payload($0)["data"] { data.count } else { -1 } }
        #expect(sizes == [10_000, 1])
        #expect(try M.payload(requests[1])["data"] == M.json(#"[["\#(M.sha256("user10000@example.com"))", ""]]"#))
    }

    @Test func metaInvalidEntrySamplesRejectTheirRows() async throws {
        let bad = M.sha256("b@example.com")
        let alsoBad = M.sha256("c@example.com")
        let receiver = TestReceiver { request in
            let invalid = request.method == "POST" ? #"{"\#(bad)": "Invalid email hash"}"# : #"["\#(alsoBad)"]"#
            var answer = M.metaAnswer(request, invalid: invalid)
            answer.body = answer.body.replacingOccurrences(of: #""num_invalid_entries": 0"#, with: #""num_invalid_entries": 2"#)
            return answer
        }
        try await receiver.serve { base in
            let destination = try M.meta(base)
            let added = try await destination.send([
                try M.change(.add, #"{"id": 1}"#, #"{"email": "a@example.com"}"#),
                try M.change(.add, #"{"id": 2}"#, #"{"email": "B@example.com"}"#),
                try M.change(.add, #"{"id": 3}"#, #"{"email": "d@example.com"}"#),
            ])
            #expect(added == [.delivered, .rejected("Meta reported this entry as invalid: Invalid email hash"), .delivered])
            let removed = try await destination.send([
                try M.change(.remove, #"{"id": 4}"#, #"{"email": "c@example.com", "phone": "+1 555 987 6543"}"#),
                try M.change(.remove, #"{"id": 5}"#, #"{"email": "e@example.com"}"#),
            ])
            #expect(removed == [.rejected("Meta reported this entry as invalid (invalid_entry_samples)"), .delivered])
        }
    }

    @Test func metaCountMismatchFailsTheBatch() async throws {
        let receiver = TestReceiver { _ in
            .init(
                body:
                    #"{"audience_id": "23850001", "session_id": "9", "num_received": 1, "num_invalid_entries": 0, "invalid_entry_samples": {}}"#
            )
        }
        try await receiver.serve { base in
            let destination = try M.meta(base)
            let error = await M.destinationError {
                _ = try await destination.send([
                    try M.change(.add, #"{"id": 1}"#, #"{"email": "a@example.com"}"#),
                    try M.change(.add, #"{"id": 2}"#, #"{"email": "b@example.com"}"#),
                ])
            }
            #expect(error?.retryable == false)
            #expect(error?.description.contains("Meta received 1 of the 2 rows sent") == true)
        }
    }

    @Test func metaGraphErrorsAreSortedAndKeepTheTokenOut() async throws {
        let receiver = TestReceiver { request in
            let code = M.requestedCode(request)
            switch code {
            case "190":
                return .init(
                    status: 400,
                    body: """
                        {"error": {"message": "Error validating access token: Session has expired (token \(M.metaToken))",
                         "type": "OAuthException", "code": 190, "error_subcode": 463, "fbtrace_id": "AbCdEf"}}
                        """)
            case "17":
                return .init(
                    status: 400,
                    body:
                        #"{"error": {"message": "User request limit reached", "type": "OAuthException", "code": 17, "fbtrace_id": "x"}}"#
                )
            case "80003":
                return .init(
                    status: 400,
                    body:
                        #"{"error": {"message": "There have been too many calls", "type": "OAuthException", "code": 80003, "fbtrace_id": "y"}}"#
                )
            case "100":
                return .init(
                    status: 400,
                    body:
                        #"{"error": {"message": "Invalid parameter", "type": "OAuthException", "code": 100, "error_subcode": 1713230, "fbtrace_id": "z"}}"#
                )
            default:
                return .init(
                    status: 429, headers: [("Retry-After", "12")], body: #"{"error": {"message": "slow down", "code": 4}}"#)
            }
        }
        try await receiver.serve { base in
            let destination = try M.meta(base)
            func attempt(_ code: String) async -> DestinationError? {
                await M.destinationError {
                    _ = try await destination.send([try M.change(.add, #"{"id": 1}"#, #"{"email": "code\#(code)@example.com"}"#)])
                }
            }
            let token = try #require(await attempt("190"))
            #expect(!token.retryable)
            #expect(token.description.contains("Meta rejected the access token (Graph error 190/463 (OAuthException)"))
            #expect(
                token.description.contains("renew destination.accessToken") && token.description.contains("fbtrace_id AbCdEf"))
            #expect(!token.description.contains(M.metaToken))

            let userLimit = try #require(await attempt("17"))
            #expect(userLimit.retryable && userLimit.description.contains("Graph error 17"))
            let audienceLimit = try #require(await attempt("80003"))
            #expect(audienceLimit.retryable)
            let invalid = try #require(await attempt("100"))
            #expect(
                !invalid.retryable
                    && invalid.description.contains("HTTP 400: Graph error 100/1713230 (OAuthException): Invalid parameter"))
            let throttled = try #require(await attempt("429"))
            #expect(throttled.retryable && throttled.retryAfter == .seconds(12))
            for error in [token, userLimit, audienceLimit, invalid, throttled] {
                #expect(!error.description.contains(M.metaToken))
            }
        }
    }

    @Test func metaSettingsAreValidatedWithPathNamedErrors() async throws {
        let validate = MetaAudienceDestination.validate
        #expect(
            try M.validationError(#"{"type": "meta_audience", "accessToken": "env:META_ACCESS_TOKEN"}"#, validate)
                == "destination.audienceId: required")
        #expect(
            try M.validationError(#"{"type": "meta_audience", "audienceId": "238"}"#, validate)
                == "destination.accessToken: required")
        #expect(
            try M.validationError(
                #"{"type": "meta_audience", "audienceId": "238", "accessToken": "t", "graphURL": "graph.facebook.com"}"#, validate
            )?
            .hasPrefix("destination.graphURL: must be an https:// URL") == true)
        #expect(
            try M.validationError(
                #"{"type": "meta_audience", "audienceId": "238", "accessToken": "t", "defaultCountryCode": "0044"}"#, validate)?
                .hasPrefix("destination.defaultCountryCode: must be a country calling code") == true)
        #expect(
            try M.validationError(
                #"{"type": "meta_audience", "audienceId": "238", "accessToken": "t", "phoneField": 3}"#, validate)
                == "destination.phoneField: must be a non-empty string")
        #expect(
            try M.validationError(
                #"{"type": "meta_audience", "audienceId": "238", "accessToken": "t", "schema": "EMAIL"}"#, validate)?
                .hasPrefix("destination.schema: unknown setting for meta_audience") == true)
        #expect(
            try M.validationError(
                #"{"type": "meta_audience", "audienceId": "238", "accessToken": "t", "defaultCountryCode": "+1"}"#, validate)
                == nil)

        let registry = DestinationRegistry.standard()
        #expect(
            try M.validationError(#"{"type": "meta_audience", "accessToken": "t"}"#, registry.validate)
                == "destination.audienceId: required")
        do {
            _ = try await registry.make(
                M.context(#"{"type": "meta_audience", "audienceId": "238", "accessToken": "env:META_ACCESS_TOKEN"}"#))
            Issue.record("built without the environment variable")
        } catch let error as SyncError {
            #expect(error.description == "destination.accessToken: the environment variable META_ACCESS_TOKEN is not set")
        }
        let made = try await registry.make(M.context(#"{"type": "meta_audience", "audienceId": "238", "accessToken": "t"}"#))
        #expect(made is MetaAudienceDestination)
    }
}

extension Marketing {
    /// For the Graph error test: the code a request asks for, from its email (`code190@example.com` → `190`).
    static func requestedCode(_ request: TestReceiver.Request) -> String {
        for code in ["190", "17", "80003", "100"]
        where (try? payload(request))?["data"] == .array([.array([.string(sha256("code\(code)@example.com")), .string("")])]) {
            return code
        }
        return "429"
    }
}
