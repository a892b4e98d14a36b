import Foundation
import LocalReceiver
import Postgres
import PostgresTesting
import Synchronization
import Testing
@testable import TributaryDestinations
@testable import TributaryModel
@testable import TributarySyncs

/// The `http` destination, defined in the sync file: templates rendered into real requests to a local receiver,
/// authentication, per-row and batch answers, and templates checked when the file is applied.
@Suite struct HTTPDestinationTests {
    typealias F = SyncFixture

    /// A HubSpot-style batch upsert: one request per batch, typed values, a bearer token from the environment, rows
    /// refused in a 207 answer matched by email; deletes go to their own endpoint.
    @Test func batchRequestsFollowTheTemplateAndListedRowsAreRejected() async throws {
        let receiver = TestReceiver()
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(
                    client,
                    [("c1", "ann@example.com", "pro", 7), ("c2", "bad@example", "free", 1), ("c3", "cy@example.com", "free", 3)])
                let registry = DestinationRegistry.standard()
                try await F.apply(
                    """
                    {"syncs": [{"name": "crm", "source": {"query": "SELECT id, email, plan, score FROM public.customers"},
                      "primaryKey": ["id"], "mode": "mirror", "fields": {"email": "email", "plan": "plan", "score": "score"},
                      "destination": {"type": "http",
                        "request": {"url": "\(base)/crm/v3/objects/contacts/batch/upsert", "headers": {"X-Sync": "{{sync}}"},
                                    "body": {"inputs": {"$rows": {"idProperty": "email", "id": "{{email}}",
                                             "properties": {"plan": "{{plan}}", "score": "{{score}}", "note": "id {{key.id}}, run {{run_id}}"}}}}},
                        "requests": {"delete": {"url": "\(base)/crm/v3/objects/contacts/batch/archive",
                                                "body": {"inputs": {"$rows": {"id": "{{email}}"}}}}},
                        "auth": {"type": "bearer", "token": "env:CRM_TOKEN"},
                        "maxBatchSize": 100,
                        "rowErrors": {"path": "errors", "match": {"field": "email", "value": "context.ids.0"}, "reason": "message"}}}]}
                    """, client, registry: registry)
                await receiver.setResponder { request in
                    guard request.path.hasSuffix("/upsert"), let body = try? JSONParser.parse(request.body),
                        case .array(let inputs)? = body["inputs"]
                    else { return .init(body: #"{"status": "COMPLETE"}"#) }
                    let bad = inputs.compactMap { input -> String? in
                        guard case .string(let id)? = input["id"], !id.contains(".") else { return nil }
                        return id
                    }
                    let errors = bad.map {
                        #"{"status": "error", "message": "Property values were not valid", "context": {"ids": ["\#($0)"]}}"#
                    }
                    return .init(status: 207, body: #"{"status": "COMPLETE", "errors": [\#(errors.joined(separator: ","))]}"#)
                }
                let runner = SyncRunner(
                    client: client, logger: TestDatabase.logger, registry: registry, environment: ["CRM_TOKEN": "hs-secret"])
                let first = try await runner.run("crm")
                #expect(first.status == .partial && first.delivered == 2 && first.rejected == 1, "\(first)")
                let requests = await receiver.requests
                #expect(requests.count == 1)
                let request = try #require(requests.first)
                #expect(request.method == "POST" && request.path == "/crm/v3/objects/contacts/batch/upsert")
                #expect(request.header("Authorization") == "Bearer hs-secret" && request.header("X-Sync") == "crm")
                guard case .array(let inputs)? = try JSONParser.parse(request.body)["inputs"] else {
                    Issue.record("no inputs in \(request.text)")
                    return
                }
                #expect(inputs.count == 3)
                // (Objects come back in jsonb's key order: the definition is stored as jsonb.)
                let ann = try #require(inputs.first { $0["id"] == .string("ann@example.com") })
                #expect(ann["idProperty"] == .string("email") && ann["properties"]?["plan"] == .string("pro"))
                #expect(ann["properties"]?["score"] == .number("7"), "typed: a number stays a number")
                #expect(ann["properties"]?["note"] == .string("id c1, run \(first.runID)"))
                let reason = try await client.query("SELECT reason FROM cdp.sync_errors WHERE key = '[\"c2\"]'").scalar(
                    String.self)
                #expect(reason == "Property values were not valid")

                // A row gone from the source is archived through the delete request.
                try await client.execute("DELETE FROM public.customers WHERE id = 'c3'")
                let second = try await runner.run("crm")
                #expect(second.removed == 1 && second.delivered == 1, "\(second)")
                let archive = try #require(await receiver.requests.last)
                #expect(archive.path == "/crm/v3/objects/contacts/batch/archive")
                #expect(
                    try JSONParser.parse(archive.body)
                        == (try JSONParser.parse(Array(#"{"inputs": [{"id": "cy@example.com"}]}"#.utf8))))
            }
        }
    }

    /// An Intercom-style API: one request per row with the key in the URL (percent-encoded), OAuth2 client
    /// credentials (the token fetched once, fetched again after a 401), a 422 rejecting that row only.
    @Test func perRowRequestsWithOAuth2AndRejectStatuses() async throws {
        let receiver = TestReceiver()
        let tokens = Mutex(0)
        let expireOnce = Mutex(true)
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, [("c 1/a", "ann@example.com", "pro", 7), ("c2", "not-an-email", "free", 1)])
                let registry = DestinationRegistry.standard()
                try await F.apply(
                    """
                    {"syncs": [{"name": "support", "source": {"query": "SELECT id, email, plan FROM public.customers"},
                      "primaryKey": ["id"], "mode": "upsert", "fields": {"email": "email", "plan": "plan"},
                      "destination": {"type": "http",
                        "request": {"method": "PUT", "url": "\(base)/contacts/{{key.id}}",
                                    "body": {"email": "{{email}}", "custom_attributes": {"plan": "{{plan}}"}}},
                        "auth": {"type": "oauth2", "tokenUrl": "\(base)/oauth/token", "clientId": "app-1", "clientSecret": "env:APP_SECRET"},
                        "rejectStatuses": [422]}}]}
                    """, client, registry: registry)
                await receiver.setResponder { request in
                    if request.path == "/oauth/token" {
                        let issued = tokens.withLock {
                            $0 += 1; return $0
                        }
                        return .init(body: #"{"access_token": "tok-\#(issued)", "token_type": "bearer", "expires_in": 3600}"#)
                    }
                    if request.header("Authorization") == "Bearer tok-1"
                        && expireOnce.withLock({
                            let first = $0; $0 = false; return first
                        })
                    {
                        return .init(status: 401, body: #"{"message": "token expired"}"#)
                    }
                    if request.text.contains("not-an-email") {
                        return .init(status: 422, body: #"{"type": "error.list", "errors": [], "message": "Email is invalid"}"#)
                    }
                    return .init(body: #"{"type": "contact"}"#)
                }
                let runner = SyncRunner(
                    client: client, logger: TestDatabase.logger, registry: registry, environment: ["APP_SECRET": "s3cret"])
                let report = try await runner.run("support")
                #expect(report.status == .partial && report.delivered == 1 && report.rejected == 1, "\(report)")
                let requests = await receiver.requests
                let tokenRequests = requests.filter { $0.path == "/oauth/token" }
                #expect(tokenRequests.count == 2, "fetched, then fetched again after the 401")
                #expect(
                    tokenRequests[0].text == "grant_type=client_credentials&client_id=app-1&client_secret=s3cret"
                        && tokenRequests[0].header("Content-Type") == "application/x-www-form-urlencoded")
                let contacts = requests.filter { $0.path.hasPrefix("/contacts/") }
                #expect(contacts.allSatisfy { $0.method == "PUT" })
                #expect(contacts.contains { $0.path == "/contacts/c%201%2Fa" && $0.header("Authorization") == "Bearer tok-2" })
                #expect(contacts.allSatisfy { $0.header("Idempotency-Key")?.count == 32 })
                let reason = try await client.query("SELECT reason FROM cdp.sync_errors").scalar(String.self)
                #expect(reason == "HTTP 422: Email is invalid")
            }
        }
    }

    /// An API's own "try again" status (`retryStatuses`) retries the batch with backoff, like a 429.
    @Test func retryStatusesAreTriedAgain() async throws {
        let receiver = TestReceiver()
        let conflicts = Mutex(1)
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, [("c1", "ann@example.com", "pro", 7)])
                try await F.apply(
                    """
                    {"syncs": [{"name": "locked", "source": {"query": "SELECT id, email FROM public.customers"},
                      "primaryKey": ["id"], "mode": "upsert", "fields": {"email": "email"},
                      "destination": {"type": "http", "request": {"url": "\(base)/contacts", "body": {"email": "{{email}}"}},
                                      "retryStatuses": [409]}}]}
                    """, client)
                await receiver.setResponder { _ in
                    conflicts.withLock { left in
                        guard left > 0 else { return .init() }
                        left -= 1
                        return .init(status: 409, body: #"{"message": "record locked"}"#)
                    }
                }
                let report = try await F.runner(client).run("locked")
                #expect(report.status == .succeeded && report.delivered == 1 && report.attempts == 2, "\(report)")
            }
        }
        #expect(await receiver.requests.count == 2)
    }

    /// Mistakes in a template fail `syncs apply`, naming where they are.
    @Test func badDefinitionsAreRefusedWhenApplied() throws {
        func refusal(
            _ destination: String, fields: String = #"{"email": "email", "plan": "plan"}"#, mode: String = "upsert"
        )
            -> String
        {
            let json = """
                {"syncs": [{"name": "s", "source": {"relation": "customers"}, "primaryKey": ["id"], "mode": "\(mode)",
                  "fields": \(fields), "destination": \(destination)}]}
                """
            do {
                _ = try SyncDefinitions.parse(Data(json.utf8), registry: .standard())
                return "(accepted)"
            } catch { return "\(error)" }
        }
        let url = "https://api.example.com/c"
        #expect(
            refusal(#"{"type": "http", "request": {"url": "\#(url)", "body": {"inputs": {"$rows": {"plan": "{{plna}}"}}}}}"#)
                .contains(
                    "syncs[0].destination.request.body.inputs.$rows.plan: unknown name 'plna' in {{…}}; the sync's fields are email, plan"
                ))
        #expect(
            refusal(#"{"type": "http", "request": {"url": "\#(url)/{{email}}", "body": {"all": {"$rows": {"e": "{{email}}"}}}}}"#)
                .contains("destination.request.url: '{{email}}' reads a row, but this is outside $rows"))
        #expect(
            refusal(#"{"type": "http", "request": {"url": "\#(url)/{{key.nope}}"}}"#)
                .contains("'key.nope' is not a primary-key column (id)"))
        #expect(
            refusal(#"{"type": "http", "request": {"url": "\#(url)"}}"#, fields: "null")
                .contains("fields: an http destination needs the sync's fields mapping"))
        #expect(
            refusal(#"{"type": "http", "request": {"url": "\#(url)"}, "requests": {"archive": {}}}"#)
                .contains("destination.requests.archive: unknown operation"))
        #expect(
            refusal(#"{"type": "http", "request": {"url": "\#(url)", "body": {"a": "{{email"}}}"#)
                .contains("destination.request.body.a: '{{' without its '}}'"))
        #expect(
            refusal(#"{"type": "http", "request": {"url": "\#(url)"}, "auth": {"type": "digest"}}"#)
                .contains("destination.auth.type: bearer, basic, header or oauth2, not 'digest'"))
        #expect(
            refusal(#"{"type": "http", "request": {"url": "\#(url)"}, "rowErrors": {"path": "errors"}}"#)
                .contains("give index (the row's position), match (a field's value) or ok"))
        #expect(
            refusal(#"{"type": "http", "request": {"url": "\#(url)"}, "rejectStatuses": [429]}"#)
                .contains("4xx statuses other than 429"))
        #expect(
            refusal(#"{"type": "http", "request": {"url": "ftp://x"}}"#).contains(
                "destination.request.url: an http:// or https:// URL"))
        #expect(
            refusal(#"{"type": "http", "request": {"url": "\#(url)"}, "rejectStatuses": [409], "retryStatuses": [409]}"#)
                .contains("destination.retryStatuses: 409 is also in rejectStatuses"))
        #expect(
            refusal(
                #"{"type": "http", "request": {"url": "\#(url)", "body": {"inputs": {"$rows": {"id": "{{key.id}}", "op": "{{operation}}"}}}}}"#
            ) == "(accepted)")
    }

    /// The ready-made definitions in examples/http-destinations are valid sync files.
    @Test func shippedExamplesApply() throws {
        let directory = TestDatabase.packageRoot.appendingPathComponent("examples/http-destinations")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".json") }.sorted()
        #expect(
            files == ["hubspot-contacts.json", "klaviyo-profiles.json", "mailchimp-audience.json", "salesforce-contacts.json"])
        for file in files {
            let data = try Data(contentsOf: directory.appendingPathComponent(file))
            let syncs = try SyncDefinitions.parse(data, registry: .standard())
            #expect(syncs.syncs.count == 1 && syncs.syncs[0].destination["type"] == .string("http"), "\(file)")
        }
    }

    /// The template language alone: typed values, text, `$rows`, and every name it uses.
    @Test func templatesRenderTypedValuesAndText() throws {
        let template = try HTTPTemplate(
            parsing: try JSONParser.parse(
                Array(
                    #"{"batch": "{{run_id}}", "items": {"$rows": {"n": "{{score}}", "t": "<{{email}}> \"x\"", "k": "{{key.id}}", "missing": "{{plan}}"}}}"#
                        .utf8)))
        #expect(template.isBatch)
        let rows = [
            SyncChange(
                operation: .upsert, key: .object([("id", .string("c1"))]),
                fields: .object([("score", .number("7")), ("email", .string("a@x.com"))]), idempotencyKey: "k1")
        ]
        let rendered = template.render(HTTPTemplate.Scope(sync: "s", runID: 42, rows: rows))
        #expect(
            rendered.serialized
                == #"{"batch":42,"items":[{"n":7,"t":"<a@x.com> \"x\"","k":"c1","missing":null}]}"#)
        let url = try HTTPTemplate(text: "https://x/{{key.id}}?e={{email}}", at: "url")
        #expect(
            url.renderText(HTTPTemplate.Scope(sync: "s", runID: 1, rows: rows), encode: percentEncoded)
                == "https://x/c1?e=a%40x.com")
    }
}
