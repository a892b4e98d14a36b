import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Postgres
import PostgresTesting
import Testing
import TributaryCollection
import TributaryGovernance
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributarySegments
@testable import TributaryServer
import TributaryService

/// The web console through a real socket, on a seeded database: sign-in, every page, escaping, masking, actions.
@Suite struct ConsoleTests {
    struct Setup {
        var client: PostgresClient
        var reader: String
        var admin: String
        var profile: UUID
        var writeKey: String
    }

    /// Something every page must show escaped, never as markup.
    static let hostile = #"<script>alert("x")</script> & 'quotes' — Zoë 東京"#

    func withConsole(_ body: @escaping @Sendable (any TestClientProtocol, Setup) async throws -> Void) async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            let (source, writeKey) = try await SourceStore(client: client).create(name: "web")
            let tokens = APITokenStore(client: client)
            let (_, reader) = try await tokens.create(name: "reader", scopes: [.profilesRead])
            let (_, admin) = try await tokens.create(name: "admin", scopes: [.admin])
            let writer = EventWriter(client: client, logger: TestDatabase.logger)
            let hostile = try JSONValue.string(Self.hostile).serialized
            let parsed = try SegmentParser(limits: CollectionLimits()).parse(
                Array(
                    """
                    {"batch": [
                      {"type": "identify", "userId": "u-1", "anonymousId": "a-1", "messageId": "c1",
                       "traits": {"email": "Alice@Example.com", "plan": "pro", "name": \(hostile)}},
                      {"type": "track", "userId": "u-1", "event": \(hostile), "messageId": "c2"}
                    ]}
                    """.utf8), type: nil, receivedAt: Date())
            #expect(parsed.issues.isEmpty, "\(parsed.issues)")
            _ = try await writer.write(parsed.events, sourceID: source.id)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            _ = try await Pipeline.profileStage(client: client, logger: TestDatabase.logger).catchUp()
            let profile = try await client.query(
                "SELECT profile_id FROM cdp.identity_nodes WHERE kind = 'user_id' AND value = 'u-1'"
            ).scalar(UUID.self)
            let segments = SegmentStore(client: client, logger: TestDatabase.logger)
            _ = try await segments.apply(SegmentDefinitions([Segment("pro_users") { Trait<String>("plan") == "pro" }]))
            _ = try await SegmentMembership(client: client, logger: TestDatabase.logger).refresh()
            // A sync with runs and a refused row (its reason carries markup), as the runner records them.
            try await client.execute(
                """
                INSERT INTO cdp.syncs (name, definition, position) VALUES ('crm', jsonb_build_object('note', \(Self.hostile)::text), 0)
                """)
            try await client.execute(
                """
                INSERT INTO cdp.sync_runs (sync, trigger, status, added, delivered, rejected, started_at, finished_at, duration_ms)
                VALUES ('crm', 'manual', 'partial', 2, 1, 1, now(), now(), 12)
                """)
            try await client.execute(
                """
                INSERT INTO cdp.sync_run_rows (run_id, sync, key, operation, outcome, reason)
                SELECT run_id, 'crm', '"u-1"', 'upsert', 'rejected', \(Self.hostile) FROM cdp.sync_runs
                """)
            let app = buildApplication(
                configuration: ServerConfiguration(port: 0, apiTokenCacheTTL: .zero, console: true), client: client,
                logger: TestDatabase.logger)
            try await app.test(.live) { http in
                try await body(http, Setup(client: client, reader: reader, admin: admin, profile: profile, writeKey: writeKey))
            }
        }
    }

    /// Signs in through the form (its nonce cookie included); returns the session cookie and the page's CSRF token.
    static func signIn(
        _ http: any TestClientProtocol, token: String, headers extra: HTTPFields = [:]
    ) async throws -> (
        cookie: String, csrf: String, setCookie: String
    ) {
        let form = try await http.execute(uri: "/console/login", method: .get, headers: extra, body: nil)
        let nonceCookie = try #require(form.headers[.setCookie]).split(separator: ";")[0]
        let nonce = String(nonceCookie.split(separator: "=")[1])
        var headers = extra
        headers[.cookie] = String(nonceCookie)
        headers[.contentType] = "application/x-www-form-urlencoded"
        let body = "nonce=\(nonce)&token=\(token.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)"
        let response = try await http.execute(
            uri: "/console/login", method: .post, headers: headers, body: ByteBuffer(string: body))
        #expect(response.status == .seeOther)
        let setCookie = try #require(response.headers[.setCookie])
        let cookie = String(setCookie.split(separator: ";")[0])
        let page = try await get(http, "/console", cookie: cookie)
        let csrf = try #require(page.body.firstMatch(of: /name="csrf" value="([^"]+)"/)?.1)
        return (cookie, String(csrf), setCookie)
    }

    static func get(
        _ http: any TestClientProtocol, _ uri: String, cookie: String?
    ) async throws -> (status: HTTPResponse.Status, body: String) {
        var headers = HTTPFields()
        if let cookie { headers[.cookie] = cookie }
        let response = try await http.execute(uri: uri, method: .get, headers: headers, body: nil)
        return (response.status, String(buffer: response.body))
    }

    static func post(
        _ http: any TestClientProtocol, _ uri: String, cookie: String, form: String
    ) async throws -> HTTPResponse.Status {
        var headers = HTTPFields()
        headers[.cookie] = cookie
        headers[.contentType] = "application/x-www-form-urlencoded"
        return try await http.execute(uri: uri, method: .post, headers: headers, body: ByteBuffer(string: form)).status
    }

    @Test func signInSetsAStrictHttpOnlyCookieAndRefusesBadTokens() async throws {
        try await withConsole { http, setup in
            // Without a session every page sends to the sign-in form.
            let anonymous = try await http.execute(uri: "/console/profiles", method: .get, headers: [:], body: nil)
            #expect(anonymous.status == .seeOther && anonymous.headers[.location] == "/console/login")
            let (_, _, setCookie) = try await Self.signIn(http, token: setup.reader)
            #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict") && !setCookie.contains("Secure"))
            var proxied = HTTPFields()
            proxied[HTTPField.Name("X-Forwarded-Proto")!] = "https"
            #expect(try await Self.signIn(http, token: setup.admin, headers: proxied).setCookie.contains("; Secure"))

            // A wrong token, and a sign-in posted without the form's nonce (from another site).
            let form = try await http.execute(uri: "/console/login", method: .get, headers: [:], body: nil)
            let nonceCookie = String(try #require(form.headers[.setCookie]).split(separator: ";")[0])
            var headers = HTTPFields()
            headers[.cookie] = nonceCookie
            headers[.contentType] = "application/x-www-form-urlencoded"
            let nonce = nonceCookie.split(separator: "=")[1]
            let wrong = try await http.execute(
                uri: "/console/login", method: .post, headers: headers, body: ByteBuffer(string: "nonce=\(nonce)&token=trb_nope"))
            #expect(wrong.status == .unauthorized)
            #expect(String(buffer: wrong.body).contains("That is not a valid API token."))
            headers[.cookie] = nil
            let forged = try await http.execute(
                uri: "/console/login", method: .post, headers: headers,
                body: ByteBuffer(string: "nonce=\(nonce)&token=\(setup.reader)"))
            #expect(forged.status == .forbidden)
            #expect(forged.headers[.setCookie]?.contains("tributary_session") != true)
        }
    }

    @Test func everyPageRendersWithValuesEscapedAndPersonalDataMaskedWithoutThePIIScope() async throws {
        try await withConsole { http, setup in
            let reader = try await Self.signIn(http, token: setup.reader)
            let admin = try await Self.signIn(http, token: setup.admin)
            let profile = "/console/profiles/\(setup.profile.uuidString.lowercased())"
            let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quotes&#39; — Zoë 東京"
            for path in [
                "/console", "/console/profiles", profile, "/console/segments", "/console/segments/pro_users", "/console/syncs",
                "/console/syncs/crm", "/console/syncs/crm?run=1", "/console/live", "/console/live?type=track&source=web",
                "/console/governance",
            ] {
                let page = try await Self.get(http, path, cookie: reader.cookie)
                #expect(page.status == .ok, "\(path): \(page.status)")
                #expect(!page.body.contains("<script>alert"), "\(path) shows markup unescaped")
                #expect(page.body.contains("show SQL") || path == "/console/profiles", "\(path) has no show SQL link")
                if ["/console/syncs/crm", profile, "/console/live"].contains(path) {
                    #expect(page.body.contains(escaped), "\(path)")
                }
            }
            // A retry through the API is answered, not stored: the live screen lists it as a duplicate.
            var retry = HTTPFields()
            retry[.authorization] = "Basic " + Data("\(setup.writeKey):".utf8).base64EncodedString()
            retry[.contentType] = "application/json"
            let retried = try await http.execute(
                uri: "/v1/track", method: .post, headers: retry,
                body: ByteBuffer(string: #"{"userId": "u-1", "event": "Clicked", "messageId": "c2"}"#))
            #expect(retried.status == .ok)
            let liveNow = try await Self.get(http, "/console/live", cookie: reader.cookie).body
            #expect(liveNow.contains("<td>c2</td><td>duplicate</td>"), "\(liveNow.suffix(2000))")
            // The overview charts the source's traffic (cdp.event_counts, kept by the writer).
            let overview = try await Self.get(http, "/console", cookie: reader.cookie).body
            #expect(overview.contains("<svg") && overview.contains("web</span>"))
            // Governance lists tokens by their hint, never their secret; the live screen masks payloads too.
            let governance = try await Self.get(http, "/console/governance", cookie: reader.cookie).body
            #expect(!governance.contains(setup.reader) && governance.contains(String(setup.reader.prefix(8))))
            #expect(governance.contains("console.login"))
            let live = try await Self.get(http, "/console/live", cookie: reader.cookie).body
            #expect(live.contains("A***@Example.com") && !live.contains("Alice@Example.com"))
            #expect(try await Self.get(http, "/console/live", cookie: admin.cookie).body.contains("Alice@Example.com"))
            // The reader sees the email and the name masked as analyst.* masks them; the admin sees them.
            let masked = try await Self.get(http, profile, cookie: reader.cookie).body
            #expect(masked.contains("a***@example.com") && !masked.contains("alice@example.com"))
            let plain = try await Self.get(http, profile, cookie: admin.cookie).body
            #expect(plain.contains("alice@example.com") && plain.contains(escaped))
            // Trait history: the name (a PII key) masked for the reader, shown to the admin.
            #expect(plain.contains("<td>plan</td><td>–</td><td>&quot;pro&quot;</td>"), "\(plain)")
            #expect(
                masked.contains("<td>name</td><td>–</td><td>") && !masked.contains("<td>name</td><td>–</td><td>&quot;&lt;script"))
            // The segment page shows its member and its size; search by any spelling of an identifier.
            #expect(try await Self.get(http, "/console/segments/pro_users", cookie: reader.cookie).body.contains("1 members"))
            var headers = HTTPFields()
            headers[.cookie] = reader.cookie
            let search = try await http.execute(
                uri: "/console/profiles?q=email:%20ALICE@example.com%20", method: .get, headers: headers, body: nil)
            #expect(search.status == .seeOther && search.headers[.location] == profile)
            #expect(try await Self.get(http, "/console/segments/nope", cookie: reader.cookie).status == .notFound)
            #expect(try await Self.get(http, "/console/profiles/not-a-uuid", cookie: reader.cookie).status == .notFound)
        }
    }

    @Test func actionsNeedTheSessionsCSRFTokenAndTheAdminScopeAndAreAudited() async throws {
        try await withConsole { http, setup in
            let reader = try await Self.signIn(http, token: setup.reader)
            let admin = try await Self.signIn(http, token: setup.admin)
            func enabled() async throws -> Bool {
                try await setup.client.query("SELECT enabled FROM cdp.syncs WHERE name = 'crm'").scalar(Bool.self)
            }
            #expect(try await Self.post(http, "/console/syncs/crm/disable", cookie: admin.cookie, form: "") == .forbidden)
            #expect(
                try await Self.post(http, "/console/syncs/crm/disable", cookie: admin.cookie, form: "csrf=\(reader.csrf)")
                    == .forbidden)
            #expect(
                try await Self.post(http, "/console/syncs/crm/disable", cookie: reader.cookie, form: "csrf=\(reader.csrf)")
                    == .forbidden)
            #expect(try await enabled())
            #expect(
                try await Self.post(http, "/console/syncs/crm/disable", cookie: admin.cookie, form: "csrf=\(admin.csrf)")
                    == .seeOther)
            #expect(try await !enabled())
            let entries = try await AuditLog(client: setup.client).entries(limit: 10)
            #expect(entries.contains { $0.actor == "console:admin" && $0.action == "syncs.disable" && $0.target == "crm" })
            #expect(entries.contains { $0.actor == "console:reader" && $0.action == "console.login" })

            // Run now and replay are admin actions, audited; a read-only token is refused.
            #expect(
                try await Self.post(http, "/console/syncs/crm/run", cookie: reader.cookie, form: "csrf=\(reader.csrf)")
                    == .forbidden)
            #expect(
                try await Self.post(http, "/console/syncs/crm/run", cookie: admin.cookie, form: "csrf=\(admin.csrf)") == .seeOther
            )
            #expect(
                try await AuditLog(client: setup.client).entries(limit: 10).contains {
                    $0.actor == "console:admin" && $0.action == "syncs.run" && $0.target == "crm"
                })

            // A dry run changes nothing, so a read-only token may do it (with its CSRF token).
            let stored = try await setup.client.query(
                "SELECT definition::text FROM cdp.segment_definitions WHERE name = 'pro_users'"
            ).scalar(String.self)
            #expect(stored.contains("\"pro\""))
            let edited = stored.replacingOccurrences(of: "\"pro\"", with: "\"free\"")
            func dryRun(_ definition: String, csrf: String) async throws -> (HTTPResponse.Status, String) {
                var headers = HTTPFields()
                headers[.cookie] = reader.cookie
                headers[.contentType] = "application/x-www-form-urlencoded"
                let body = "csrf=\(csrf)&definition=\(definition.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)"
                let response = try await http.execute(
                    uri: "/console/segments/pro_users/plan", method: .post, headers: headers, body: ByteBuffer(string: body))
                return (response.status, String(buffer: response.body))
            }
            let (status, page) = try await dryRun(edited, csrf: reader.csrf)
            #expect(status == .ok)
            #expect(page.contains("1 members now, <strong>0</strong>"), "\(page.suffix(1500))")
            #expect(try await dryRun(edited, csrf: "forged").0 == .forbidden)
            let (_, broken) = try await dryRun("{\"name\": \"pro_users\", \"conditions\": [{\"trait\": 5}]}", csrf: reader.csrf)
            #expect(broken.contains("class=\"problem\""))
            #expect(try await setup.client.query("SELECT count(*) FROM cdp.segment_members").scalar(Int.self) == 1)

            // Explaining an identifier names the others: it needs the pii scope.
            let explain = "/console/profiles/\(setup.profile.uuidString.lowercased())/explain?kind=email&value=alice@example.com"
            #expect(try await Self.get(http, explain, cookie: reader.cookie).status == .notFound)
            let explained = try await Self.get(http, explain, cookie: admin.cookie)
            #expect(explained.status == .ok && explained.body.contains("user_id"), "\(explained.body.suffix(800))")

            // Revoking the token ends its session at the next request.
            _ = try await APITokenStore(client: setup.client).revoke(name: "reader")
            #expect(try await Self.get(http, "/console", cookie: reader.cookie).status == .seeOther)
            // Signing out ends the session too.
            #expect(try await Self.post(http, "/console/logout", cookie: admin.cookie, form: "csrf=\(admin.csrf)") == .seeOther)
            #expect(try await Self.get(http, "/console", cookie: admin.cookie).status == .seeOther)
        }
    }
}
