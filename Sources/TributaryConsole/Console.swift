import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Postgres
import TributaryCollection
import TributaryGovernance
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributaryRuntime
import TributarySegments
import TributarySyncs

/// The web console (`tributary serve --console`, on by default in `tributary demo`): server-rendered pages under
/// `/console` — overview, profile explorer, segments, syncs — each with the SQL it ran behind a "show SQL" link.
///
/// Sign-in is with an API token (`profiles:read` reads; `admin` may also act; without `pii` personal data is masked
/// as the `analyst.*` views mask it). The session cookie is `HttpOnly`, `SameSite=Strict` and `Secure` when the
/// request came over TLS (`X-Forwarded-Proto: https` from a proxy); every action is a POST carrying the session's
/// CSRF token, and sign-ins, sign-outs and actions are recorded in the audit log with the token's name. Every value
/// on a page goes through ``HTML`` escaping; pages carry a Content-Security-Policy that allows no script at all.
public struct Console<Context: RequestContext>: Sendable {
    let client: PostgresClient
    let logger: Logger
    let sessions = ConsoleSessions()
    let tokens: APITokenStore
    /// What syncs deliver to, for "run now" and "replay rejected rows".
    let registry: DestinationRegistry
    /// The serving process's event writer, whose recent duplicates and suppressed calls the live screen lists.
    let writer: EventWriter?
    /// A streaming replica the profile explorer reads from while it is within its lag bound (nil: the primary). The
    /// operational pages (overview, live events, segments, syncs, governance) read the primary: they show what is
    /// happening now.
    let replica: ReadReplica?

    public init(
        client: PostgresClient, registry: DestinationRegistry, writer: EventWriter? = nil, replica: ReadReplica? = nil,
        logger: Logger
    ) {
        self.client = client
        self.logger = logger
        self.registry = registry
        self.writer = writer
        self.replica = replica
        self.tokens = APITokenStore(client: client)
    }

    /// Runs the reads of `body` on the replica when there is one and it is usable, else on the primary.
    func reading<T: Sendable>(_ body: @Sendable (PostgresClient) async throws -> T) async throws -> T {
        try await ReadReplica.read(replica, primary: client, body)
    }

    /// Adds the console's routes under `/console`.
    public func register(on router: Router<Context>) {
        router.get("/console/login") { request, _ in loginPage(request, problem: nil) }
        router.post("/console/login") { request, _ in await login(request) }
        router.post("/console/logout") { request, _ in await signedIn(request, action: true) { try await logout($0, $1) } }
        router.get("/console") { request, _ in await signedIn(request) { try await overview($0, $1) } }
        router.get("/console/live") { request, _ in await signedIn(request) { try await live($0, $1) } }
        router.get("/console/live/stream") { request, _ in await signedIn(request) { try await liveStream($0, $1) } }
        router.get("/console/assets/live.js") { _, _ in Self.script() }
        router.get("/console/profiles") { request, _ in await signedIn(request) { try await profileSearch($0, $1) } }
        router.get("/console/profiles/:id") { request, context in
            let id = context.parameters.get("id") ?? ""
            return await signedIn(request) { try await profile(id, $0, $1) }
        }
        router.get("/console/segments") { request, _ in await signedIn(request) { try await segments($0, $1) } }
        router.get("/console/segments/:name") { request, context in
            let name = context.parameters.get("name") ?? ""
            return await signedIn(request) { try await segment(name, $0, $1) }
        }
        router.get("/console/syncs") { request, _ in await signedIn(request) { try await syncs($0, $1) } }
        router.get("/console/syncs/:name") { request, context in
            let name = context.parameters.get("name") ?? ""
            return await signedIn(request) { try await sync(name, $0, $1) }
        }
        router.post("/console/syncs/:name/run") { request, context in
            let name = context.parameters.get("name") ?? ""
            return await signedIn(request, action: true) { try await runSync(name, replay: false, $0, $1) }
        }
        router.post("/console/syncs/:name/replay") { request, context in
            let name = context.parameters.get("name") ?? ""
            return await signedIn(request, action: true) { try await runSync(name, replay: true, $0, $1) }
        }
        router.post("/console/segments/:name/plan") { request, context in
            let name = context.parameters.get("name") ?? ""
            return await signedIn(request, action: true, readOnly: true) { try await planSegment(name, $0, $1) }
        }
        router.get("/console/profiles/:id/explain") { request, context in
            let id = context.parameters.get("id") ?? ""
            return await signedIn(request) { try await explain(id, $0, $1) }
        }
        router.get("/console/governance") { request, _ in await signedIn(request) { try await governance($0, $1) } }
        for (path, enabled) in [("enable", true), ("disable", false)] {
            router.post("/console/syncs/:name/\(path)") { request, context in
                let name = context.parameters.get("name") ?? ""
                return await signedIn(request, action: true) { try await setSync(name, enabled: enabled, $0, $1) }
            }
        }
    }

    // MARK: - Sign-in, sessions, CSRF

    /// What a page handler gets: the session and the request's form (for actions).
    struct Visit {
        var session: ConsoleSessions.Session
        var form: [String: String]
        var query: [String: String]
        var mask: PIIMask
    }

    /// Runs `page` for a signed-in visitor; a visitor without a session is sent to the sign-in page. With `action`,
    /// the request must be a form POST carrying the session's CSRF token, and the token must have `admin` (unless
    /// `readOnly`: a POST that changes nothing, such as a segment's dry run).
    func signedIn(
        _ request: Request, action: Bool = false, readOnly: Bool = false,
        _ render: (Visit, Request) async throws -> Response
    ) async -> Response {
        guard var session = sessions.session(cookieHeader: request.headers[.cookie]) else {
            if action { return Self.plain(.forbidden, "sign in first: your session ended or never began") }
            return Self.redirect("/console/login")
        }
        // The token may have been revoked since the sign-in (checked again here, so revoking it ends the session).
        do {
            guard let token = try await tokens.authenticate(session.secret) else {
                sessions.close(session.id)
                return Self.redirect("/console/login")
            }
            session.token = token
        } catch {
            logger.error("console: token lookup failed", metadata: ["error": "\(error)"])
            return Self.plain(.serviceUnavailable, "the database is unavailable; retry")
        }
        var form: [String: String] = [:]
        if action {
            form = await Self.form(request)
            guard let sent = form["csrf"], ConsoleSessions.same(sent, session.csrf) else {
                return Self.plain(.forbidden, "this form is missing its CSRF token or carries another session's: reload the page")
            }
            guard readOnly || session.token.allows(.admin) || request.uri.path == "/console/logout" else {
                return Self.plain(.forbidden, "this API token is read-only: actions need a token with the admin scope")
            }
        }
        var query: [String: String] = [:]
        for (key, value) in request.uri.queryParameters { query[String(key)] = String(value) }
        do {
            let mask = try await PIIMask.load(client, visible: session.token.allows(.pii))
            return try await render(Visit(session: session, form: form, query: query, mask: mask), request)
        } catch let error as ConsoleError {
            return page(error.status, title: "Not found", session: session, body: "<p class=\"problem\">\(error.message)</p>")
        } catch {
            logger.error("console: page failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return page(
                .internalServerError, title: "Error", session: session,
                body: "<p class=\"problem\">The page failed: \(String(String(describing: error).prefix(500)))</p>")
        }
    }

    func loginPage(_ request: Request, problem: String?, status: HTTPResponse.Status = .ok) -> Response {
        // A nonce in a cookie and in the form (double submit): a sign-in can only come from this form.
        let nonce = ConsoleSessions.random()
        let problemHTML: HTML = problem.map { "<p class=\"problem\">\($0)</p>" } ?? ""
        var response = Self.html(
            status,
            Layout.page(
                title: "Sign in", session: nil,
                body: """
                    <h1>Sign in to Tributary</h1>\(problemHTML)
                    <form method="post" action="/console/login" class="login">
                    <input type="hidden" name="nonce" value="\(nonce)">
                    <label>API token <input type="password" name="token" autocomplete="off" required autofocus></label>
                    <button type="submit">Sign in</button>
                    </form>
                    <p class="hint">Create one with <code>tributary tokens create NAME --scope profiles:read</code> (read-only;
                    add <code>--scope pii</code> to see personal data) or <code>--scope admin</code> (also acts).</p>
                    """))
        response.headers[.setCookie] = Self.cookie("tributary_login", nonce, request: request, maxAge: 600)
        return response
    }

    func login(_ request: Request) async -> Response {
        let form = await Self.form(request)
        guard let nonce = form["nonce"],
            let expected = ConsoleSessions.cookie(named: "tributary_login", in: request.headers[.cookie]),
            ConsoleSessions.same(nonce, expected)
        else {
            return loginPage(request, problem: "The sign-in form expired or came from elsewhere; try again.", status: .forbidden)
        }
        let secret = (form["token"] ?? "").trimmingCharacters(in: .whitespaces)
        let token: APIToken?
        do {
            token = secret.isEmpty ? nil : try await tokens.authenticate(secret)
        } catch {
            logger.error("console: token lookup failed", metadata: ["error": "\(error)"])
            return Self.plain(.serviceUnavailable, "the database is unavailable; retry")
        }
        guard let token else {
            return loginPage(request, problem: "That is not a valid API token.", status: .unauthorized)
        }
        guard token.allows(.profilesRead) else {
            return loginPage(
                request, problem: "The token '\(token.name)' has neither the profiles:read nor the admin scope.",
                status: .forbidden)
        }
        let session = sessions.open(token: token, secret: secret)
        await audit(token, "console.login", target: nil)
        var response = Self.redirect("/console")
        response.headers[.setCookie] = Self.cookie(
            ConsoleSessions.cookie, session.id, request: request, maxAge: Int(ConsoleSessions.lifetime))
        return response
    }

    func logout(_ visit: Visit, _ request: Request) async throws -> Response {
        sessions.close(visit.session.id)
        await audit(visit.session.token, "console.logout", target: nil)
        var response = Self.redirect("/console/login")
        response.headers[.setCookie] = Self.cookie(ConsoleSessions.cookie, "", request: request, maxAge: 0)
        return response
    }

    func audit(_ token: APIToken, _ action: String, target: String?) async {
        do {
            try await client.withConnection { db in
                try await AuditLog.record(db, actor: .init("console:\(token.name)"), action: action, target: target)
            }
        } catch {
            logger.error("console: audit log write failed", metadata: ["action": "\(action)", "error": "\(error)"])
        }
    }

    // MARK: - Pages

    func overview(_ visit: Visit, _ request: Request) async throws -> Response {
        let traffic = ConsoleQueries.eventsPerMinute
        let lag = ConsoleQueries.stageLag
        let segments = ConsoleQueries.segmentSizes
        let syncs = ConsoleQueries.syncHealth
        let failures = ConsoleQueries.recentFailures
        let (trafficRows, lagRows, segmentRows, syncRows, failureRows) = try await client.withConnection { db in
            (
                try await db.query(traffic).map { try $0.decode((String, Date, Int).self) },
                try await db.query(lag).map { try $0.decode((String, Int64, Int64, Date?).self) },
                try await db.query(segments).map { try $0.decode((String, Bool, Int, Date?).self) },
                try await db.query(syncs).map(SyncHealth.init),
                try await db.query(failures).map { try $0.decode((String, Int64, String, Date, String?).self) }
            )
        }
        // Events per minute per source over the last hour, zeros filled in.
        let now = Date()
        let start = Date(timeIntervalSince1970: (now.timeIntervalSince1970 / 60).rounded(.down) * 60 - 59 * 60)
        let minutes = (0..<60).map { start + Double($0) * 60 }
        var bySource: [String: [Double]] = [:]
        for (source, minute, count) in trafficRows {
            let index = Int((minute.timeIntervalSince(start) / 60).rounded())
            guard minutes.indices.contains(index) else { continue }
            bySource[source, default: Array(repeating: 0, count: 60)][index] += Double(count)
        }
        let series = bySource.keys.sorted().enumerated().map { offset, source in
            Chart.Series(
                name: source, values: bySource[source]!.map { $0 / 60 }, color: Chart.palette[offset % Chart.palette.count])
        }
        let chart: HTML =
            series.isEmpty
            ? "<p class=\"empty\">No events in the last hour.</p>"
            : Chart.lines(
                series, labels: minutes.map(Layout.clock), title: "Events/s per source, last 60 minutes (per-minute means)")
        let lagTable = Layout.table(
            ["stage", "checkpoint", "events behind", "updated"],
            lagRows.map { ["\($0.0)", "\($0.1)", "\($0.2)", "\(Layout.time($0.3))"] })
        let segmentTable = Layout.table(
            ["segment", "mode", "members", "refreshed"],
            segmentRows.map {
                [
                    "\(Layout.link("/console/segments/", $0.0))", $0.1 ? "real time" : "refreshed", "\($0.2)",
                    "\(Layout.time($0.3))",
                ]
            })
        let syncTable = syncHealthTable(syncRows)
        let failureTable: HTML =
            failureRows.isEmpty
            ? "<p class=\"empty\">No failed or partial sync runs in the last hour.</p>"
            : Layout.table(
                ["sync", "run", "status", "started", "error"],
                failureRows.map {
                    ["\(Layout.link("/console/syncs/", $0.0))", "\($0.1)", "\($0.2)", "\(Layout.time($0.3))", "\($0.4 ?? "")"]
                })
        return page(
            .ok, title: "Overview", session: visit.session,
            body: """
                <h1>Overview</h1>
                <section><h2>Traffic</h2>\(chart)\(Layout.sql(traffic))</section>
                <section><h2>Stages</h2>\(lagTable)\(Layout.sql(lag))</section>
                <section><h2>Segments</h2>\(segmentTable)\(Layout.sql(segments))</section>
                <section><h2>Syncs</h2>\(syncTable)\(Layout.sql(syncs))</section>
                <section><h2>Errors in the last hour</h2>\(failureTable)\(Layout.sql(failures))</section>
                """)
    }

    struct SyncHealth {
        var name: String, enabled: Bool, status: String?, started: Date?, delivered: Int?, rejected: Int?, failed: Int?,
            errors: Int
        init(_ row: PostgresRow) throws {
            (name, enabled, status, started, delivered, rejected, failed, errors) = try row.decode(
                (String, Bool, String?, Date?, Int?, Int?, Int?, Int).self)
        }
    }

    func syncHealthTable(_ rows: [SyncHealth]) -> HTML {
        Layout.table(
            ["sync", "enabled", "last run", "started", "delivered", "rejected", "failed", "rows in error"],
            rows.map {
                [
                    "\(Layout.link("/console/syncs/", $0.name))", $0.enabled ? "yes" : "no", "\($0.status ?? "never run")",
                    "\(Layout.time($0.started))", "\($0.delivered ?? 0)", "\($0.rejected ?? 0)", "\($0.failed ?? 0)",
                    "\($0.errors)",
                ]
            })
    }

    func profileSearch(_ visit: Visit, _ request: Request) async throws -> Response {
        let text = (visit.query["q"] ?? "").trimmingCharacters(in: .whitespaces)
        var problem: HTML = ""
        if !text.isEmpty {
            if let id = UUID(uuidString: text) {
                let live = try await reading {
                    try await $0.query(ConsoleQueries.resolve(id)).first?[0].decode(UUID?.self) ?? nil
                }
                if let live { return Self.redirect("/console/profiles/\(live.uuidString.lowercased())") }
                problem = "<p class=\"problem\">No profile has or had the id \(text).</p>"
            } else if let colon = text.firstIndex(of: ":"), colon != text.startIndex {
                let (kind, value) = (String(text[..<colon]), String(text[text.index(after: colon)...]))
                let (outcome, id, message) = try await reading {
                    try await $0.query(ConsoleQueries.lookup(kind: kind, value: value))[0].decode((String, UUID?, String?).self)
                }
                if outcome == "found", let id { return Self.redirect("/console/profiles/\(id.uuidString.lowercased())") }
                problem = "<p class=\"problem\">\(message ?? "No profile has the identifier \(text).")</p>"
            } else {
                problem = "<p class=\"problem\">Search by KIND:VALUE (email:jane@example.com, user_id:42) or a profile id.</p>"
            }
        }
        return page(
            .ok, title: "Profiles", session: visit.session,
            body: """
                <h1>Profiles</h1>
                <form method="get" action="/console/profiles" class="search">
                <input name="q" value="\(text)" placeholder="email:jane@example.com, phone:+1 555…, user_id:42, or a profile id" size="60">
                <button type="submit">Find</button></form>
                \(problem)
                <p class="hint">Identifiers are normalized as the identity stage normalizes them (emails lower-cased, phones to
                digits), so any spelling finds the profile.</p>
                """)
    }

    func profile(_ rawID: String, _ visit: Visit, _ request: Request) async throws -> Response {
        guard let id = UUID(uuidString: rawID) else { throw ConsoleError("'\(rawID.prefix(100))' is not a profile id") }
        let document = ConsoleQueries.profileDocument(id)
        let merges = ConsoleQueries.merges(id)
        let graph = ConsoleQueries.graph(id)
        let history = ConsoleQueries.segmentHistory(id)
        let consent = ConsoleQueries.consent(id)
        let changes = ConsoleQueries.traitHistory(id)
        let (changeRows, text, mergeRows, edgeRows, historyRows, consentRows) = try await reading { client in
            try await client.withConnection { db in
                (
                    try await db.query(changes).map { try $0.decode((String, String?, String?, String, Date).self) },
                    try await db.query(document).first?[0].decode(String?.self) ?? nil,
                    try await db.query(merges).map { try $0.decode((UUID, UUID, String, String?, String?, Date).self) },
                    try await db.query(graph).map { try $0.decode((Int64, String, String, String, Int64?).self) },
                    try await db.query(history).map { try $0.decode((String, String, String, Date).self) },
                    try await db.query(consent).map { try $0.decode((String, Bool, Date).self) }
                )
            }
        }
        guard let text, let json = try? JSONParser.parse(Array(text.utf8)), json["identities"] != nil else {
            let live = try await reading { try await $0.query(ConsoleQueries.resolve(id)).first?[0].decode(UUID?.self) ?? nil }
            if let live, live != id { return Self.redirect("/console/profiles/\(live.uuidString.lowercased())") }
            throw ConsoleError("no profile \(id.uuidString.lowercased()) (deleted, or never created)")
        }
        let mask = visit.mask
        func members(_ value: JSONValue?) -> [(String, JSONValue)] {
            if case .object(let members)? = value { return members }
            return []
        }
        func items(_ value: JSONValue?) -> [JSONValue] {
            if case .array(let items)? = value { return items }
            return []
        }
        let traits = Layout.table(
            ["trait", "value"], members(json["traits"]).map { ["\($0.0)", "\(mask.value(key: $0.0, $0.1))"] })
        let computed = Layout.table(
            ["computed trait", "value"], members(json["computed_traits"]).map { ["\($0.0)", "\($0.1.serialized)"] })
        let profilePath = "/console/profiles/\(id.uuidString.lowercased())"
        let identities = Layout.table(
            ["kind", "value", "first seen", "last seen", "why here"],
            items(json["identities"]).map {
                let kind = $0["kind"]?.plainText ?? "", value = $0["value"]?.plainText ?? ""
                let why: HTML =
                    mask.visible
                    ? "<a href=\"\(profilePath)/explain?kind=\(percentEncoded(kind))&amp;value=\(percentEncoded(value))\">explain</a>"
                    : "(pii scope)"
                return [
                    "\(kind)", "\(mask.identifier(kind: kind, value))", "\($0["first_seen_at"]?.plainText ?? "")",
                    "\($0["last_seen_at"]?.plainText ?? "")", why,
                ]
            })
        let events = Layout.table(
            ["time", "type", "event / name", "source"],
            items(json["events"]).map {
                [
                    "\($0["timestamp"]?.plainText ?? "")", "\($0["type"]?.plainText ?? "")",
                    "\($0["event"]?.plainText ?? $0["name"]?.plainText ?? "")", "\($0["source_id"]?.plainText ?? "")",
                ]
            })
        let segmentsNow = Layout.table(
            ["segment", "since"],
            items(json["segments"]).map {
                ["\(Layout.link("/console/segments/", $0["segment"]?.plainText ?? ""))", "\($0["entered_at"]?.plainText ?? "")"]
            })
        let mergeTable = Layout.table(
            ["from", "into", "reason", "because of", "when"],
            mergeRows.map { from, into, reason, kind, value, at in
                [
                    "\(Layout.link("/console/profiles/", from.uuidString.lowercased()))",
                    "\(Layout.link("/console/profiles/", into.uuidString.lowercased()))", "\(reason)",
                    "\(kind.map { "\($0):\(mask.identifier(kind: $0, value ?? ""))" } ?? "")", "\(Layout.time(at))",
                ]
            })
        let historyTable = Layout.table(
            ["segment", "change", "reason", "when"],
            historyRows.map { ["\(Layout.link("/console/segments/", $0.0))", "\($0.1)", "\($0.2)", "\(Layout.time($0.3))"] })
        let consentTable = Layout.table(
            ["purpose", "granted", "updated"], consentRows.map { ["\($0.0)", $0.1 ? "yes" : "no", "\(Layout.time($0.2))"] })
        let picture = GraphPicture.draw(edgeRows, mask: mask)
        func shown(_ key: String, _ text: String?) -> String {
            guard let text else { return "–" }
            guard let value = try? JSONParser.parse(Array(text.utf8)) else { return text }
            return mask.value(key: key, value)
        }
        let traitChanges = Layout.table(
            ["trait", "from", "to", "because of", "when"],
            changeRows.map { ["\($0.0)", "\(shown($0.0, $0.1))", "\(shown($0.0, $0.2))", "\($0.3)", "\(Layout.time($0.4))"] })
        var predicted: [[HTML]] = members(json["predictions"]).map { ["\($0.0)", "\($0.1.serialized)"] }
        predicted += members(json["propensities"]).map {
            [
                "propensity \($0.0)",
                "probability \($0.1["probability"]?.plainText ?? "–"), percentile \($0.1["percentile"]?.plainText ?? "–")",
            ]
        }
        let recommended = items(json["recommendations"]).map {
            "\($0["product_id"]?.plainText ?? "") (\($0["source"]?.plainText ?? ""))"
        }
        if !recommended.isEmpty { predicted.append(["recommendations", "\(recommended.joined(separator: ", "))"]) }
        let predictions = Layout.table(["prediction", "value"], predicted)
        let summary: HTML = """
            <p>First seen \(json["first_seen_at"]?.plainText ?? "–"), last seen \(json["last_seen_at"]?.plainText ?? "–"),
            \(json["event_count"]?.plainText ?? "0") events.\(mask.visible ? "" : " Personal data is masked: your token has no pii scope.")</p>
            """
        return page(
            .ok, title: "Profile", session: visit.session,
            body: """
                <h1>Profile <code>\(id.uuidString.lowercased())</code></h1>\(summary)
                <section><h2>Traits</h2>\(traits)</section>
                <section><h2>Trait history</h2>\(traitChanges)\(Layout.sql(changes))</section>
                <section><h2>Computed traits</h2>\(computed)\(Layout.sql(document))</section>
                <section><h2>Predictions</h2>\(predictions)</section>
                <section><h2>Identity graph</h2>\(picture)\(identities)\(Layout.sql(graph))
                <p class="hint">"explain" shows the events that linked an identifier to the others (as
                <code>tributary identity explain KIND:VALUE</code> does).</p></section>
                <section><h2>Merges and splits</h2>\(mergeTable)\(Layout.sql(merges))</section>
                <section><h2>Segments</h2>\(segmentsNow)<h3>Entered and exited</h3>\(historyTable)\(Layout.sql(history))</section>
                <section><h2>Consent</h2>\(consentTable)\(Layout.sql(consent))</section>
                <section><h2>Latest events</h2>\(events)</section>
                """)
    }

    func segments(_ visit: Visit, _ request: Request) async throws -> Response {
        let query = ConsoleQueries.segmentSizes
        let rows = try await client.query(query).map { try $0.decode((String, Bool, Int, Date?).self) }
        return page(
            .ok, title: "Segments", session: visit.session,
            body: """
                <h1>Segments</h1>\(Layout.table(
                    ["segment", "mode", "members", "refreshed"],
                    rows.map { ["\(Layout.link("/console/segments/", $0.0))", $0.1 ? "real time" : "refreshed", "\($0.2)", "\(Layout.time($0.3))"] }))
                \(Layout.sql(query))
                """)
    }

    func segment(_ name: String, _ visit: Visit, _ request: Request) async throws -> Response {
        let definition = ConsoleQueries.segmentDefinition(name)
        guard let row = try await client.query(definition).first else { throw ConsoleError("no segment named '\(name)'") }
        let (json, realtime, size) = try row.decode((String, Bool, Int).self)
        let daily = ConsoleQueries.segmentDaily(name)
        let days = try await client.query(daily).map { try $0.decode((Date, Int, Int).self) }
        // Size per day, walked back from today's size through each day's entries and exits.
        var sizes: [Double] = []
        var current = size
        for (_, entered, exited) in days.reversed() {
            sizes.append(Double(current))
            current -= entered - exited
        }
        sizes.reverse()
        let labels = days.map { Layout.day($0.0) }
        let chart = Chart.lines(
            [
                .init(name: "members", values: sizes, color: Chart.palette[0]),
                .init(name: "entered", values: days.map { Double($0.1) }, color: Chart.palette[1]),
                .init(name: "exited", values: days.map { Double($0.2) }, color: Chart.palette[2]),
            ], labels: labels, title: "Members at the end of each day, entries and exits, last 30 days")
        let store = SegmentStore(client: client, logger: logger)
        let sql = try await store.sql(name).view
        let preview = try await store.preview(name, limit: 20)
        let pretty = (try? JSONParser.parse(Array(json.utf8)).prettyPrinted) ?? json
        return page(
            .ok, title: "Segment \(name)", session: visit.session,
            body: """
                <h1>Segment <code>\(name)</code></h1>
                <p>\(size) members, \(realtime ? "kept in real time" : "refreshed on a schedule").</p>
                <section><h2>Size over time</h2>\(chart)\(Layout.sql(daily))</section>
                <section><h2>Definition</h2><pre>\(pretty)</pre>\(Layout.sql(definition))</section>
                <section><h2>Its SQL (the view <code>segments."\(name)"</code>)</h2><pre>\(sql)</pre></section>
                <section><h2>Members (first 20 of \(preview.total))</h2>
                <ul class="members">\(preview.rows.map { "<li>\($0)</li>" as HTML })</ul></section>
                <section><h2>Try an edited definition</h2>
                <form method="post" action="/console/segments/\(percentEncoded(name))/plan">
                <input type="hidden" name="csrf" value="\(visit.session.csrf)">
                <textarea name="definition" rows="10" cols="100">\(pretty)</textarea><br>
                <button type="submit">Dry run: size before and after</button></form>
                <p class="hint">Nothing is applied: apply with <code>tributary segments apply FILE</code>.</p></section>
                """)
    }

    /// The dry run of an edited definition of segment `name`: its size now and with the edit, and the SQL.
    func planSegment(_ name: String, _ visit: Visit, _ request: Request) async throws -> Response {
        let store = SegmentStore(client: client, logger: logger)
        let edited = visit.form["definition"] ?? ""
        var result: HTML
        do {
            // The file as it stands, with this segment's definition replaced by the edit.
            let stored = try await client.query(
                "SELECT name, definition::text FROM cdp.segment_definitions ORDER BY position"
            ).map { try $0.decode((String, String).self) }
            guard stored.contains(where: { $0.0 == name }) else { throw ConsoleError("no segment named '\(name)'") }
            let file = "{\"segments\": [" + stored.map { $0.0 == name ? edited : $0.1 }.joined(separator: ",\n") + "]}"
            let plan = try await store.plan(try await store.load(Data(file.utf8)))
            let changes = plan.filter { $0.kind != .unchanged && $0.kind != .removed }
            guard let change = changes.first, let sql = change.newSQL else {
                result = "<p>The edit changes nothing: the compiled query is the same.</p>"
                return segmentPlanPage(name, visit, edited: edited, result: result)
            }
            let after = try await store.count(sql: sql)
            result = """
                <p>Segment <code>\(change.name)</code>: \(change.members.map(String.init) ?? "new") members now, <strong>\(after)</strong>
                with the edit.</p><details open><summary>the edited SQL</summary><pre>\(sql)</pre></details>
                """
        } catch let error as ConsoleError {
            throw error
        } catch {
            result = "<p class=\"problem\">\(String(describing: error))</p>"
        }
        return segmentPlanPage(name, visit, edited: edited, result: result)
    }

    func segmentPlanPage(_ name: String, _ visit: Visit, edited: String, result: HTML) -> Response {
        page(
            .ok, title: "Dry run of \(name)", session: visit.session,
            body: """
                <h1>Dry run of segment \(Layout.link("/console/segments/", name))</h1>\(result)
                <form method="post" action="/console/segments/\(percentEncoded(name))/plan">
                <input type="hidden" name="csrf" value="\(visit.session.csrf)">
                <textarea name="definition" rows="10" cols="100">\(edited)</textarea><br>
                <button type="submit">Dry run again</button></form>
                """)
    }

    /// `tributary identity explain` for one identifier of a profile (needs the pii scope: it names other identifiers).
    func explain(_ rawID: String, _ visit: Visit, _ request: Request) async throws -> Response {
        let kind = visit.query["kind"] ?? "", value = visit.query["value"] ?? ""
        guard visit.mask.visible else {
            throw ConsoleError("explaining an identifier shows the identifiers it is linked to: it needs the pii scope")
        }
        let text = try await IdentityAdmin(client: client, logger: logger).explain(Identifier(kind: kind, value: value))
        return page(
            .ok, title: "Explain \(kind)", session: visit.session,
            body: """
                <h1>Why <code>\(kind):\(value)</code> is where it is</h1>
                <p>\(Layout.link("/console/profiles/", rawID)) · the same as <code>tributary identity explain \(kind):\(value)</code></p>
                <pre>\(text)</pre>
                """)
    }

    /// Runs the sync now, or replays the rows its latest run refused, in the background; back to its page.
    func runSync(_ name: String, replay: Bool, _ visit: Visit, _ request: Request) async throws -> Response {
        guard try await client.query(ConsoleQueries.syncState(name)).first != nil else {
            throw ConsoleError("no sync named '\(name)'")
        }
        let runner = SyncRunner(client: client, logger: logger, registry: registry)
        let logger = logger
        Task {
            do {
                if replay {
                    _ = try await runner.replay(name, rejectedOnly: true)
                } else {
                    _ = try await runner.run(name, trigger: "manual")
                }
            } catch {
                logger.error("console: sync \(name) \(replay ? "replay" : "run") failed", metadata: ["error": "\(error)"])
            }
        }
        await audit(visit.session.token, replay ? "syncs.replay" : "syncs.run", target: name)
        let notice = replay ? "Replaying the rejected rows of the latest run" : "A run started"
        return Self.redirect(
            "/console/syncs/\(percentEncoded(name))?notice=\(percentEncoded(notice + "; reload to see it below."))")
    }

    func syncs(_ visit: Visit, _ request: Request) async throws -> Response {
        let query = ConsoleQueries.syncHealth
        let rows = try await client.query(query).map(SyncHealth.init)
        return page(
            .ok, title: "Syncs", session: visit.session,
            body: "<h1>Syncs</h1>\(syncHealthTable(rows))\(Layout.sql(query))")
    }

    func sync(_ name: String, _ visit: Visit, _ request: Request) async throws -> Response {
        let state = ConsoleQueries.syncState(name)
        guard let row = try await client.query(state).first else { throw ConsoleError("no sync named '\(name)'") }
        let (definition, enabled, nextRun) = try row.decode((String, Bool, Date?).self)
        let runs = ConsoleQueries.syncRuns(name)
        let selectedRun = visit.query["run"].flatMap { Int64($0) }
        let problems = ConsoleQueries.syncProblemRows(name, run: selectedRun)
        let (runRows, problemRows) = try await client.withConnection { db in
            (
                try await db.query(runs).map {
                    try $0.decode((Int64, String, String, Int, Int, Int, Int, Int, Int, Date, Int?, String?).self)
                },
                try await db.query(problems).map { try $0.decode((Int64, String, String, String, String?, Date).self) }
            )
        }
        let ordered = Array(runRows.reversed())
        let chart: HTML =
            ordered.isEmpty
            ? "<p class=\"empty\">No runs yet.</p>"
            : Chart.lines(
                [("added", 3), ("changed", 4), ("removed", 5), ("delivered", 6), ("failed", 8)].enumerated().map {
                    offset, column in
                    Chart.Series(
                        name: column.0,
                        values: ordered.map {
                            Double([$0.3, $0.4, $0.5, $0.6, $0.7, $0.8][column.1 - 3])
                        }, color: Chart.palette[offset])
                }, labels: ordered.map { "#\($0.0)" }, title: "Rows per run, last \(ordered.count) runs")
        let runTable = Layout.table(
            [
                "run", "trigger", "status", "added", "changed", "removed", "delivered", "rejected", "failed", "started", "ms",
                "error",
            ],
            runRows.map {
                [
                    "<a href=\"/console/syncs/\(percentEncoded(name))?run=\($0.0)\">\($0.0)</a>", "\($0.1)", "\($0.2)", "\($0.3)",
                    "\($0.4)", "\($0.5)", "\($0.6)", "\($0.7)", "\($0.8)",
                    "\(Layout.time($0.9))", "\($0.10.map(String.init) ?? "")", "\($0.11 ?? "")",
                ]
            })
        let problemTable: HTML =
            problemRows.isEmpty
            ? "<p class=\"empty\">No rejected or failed rows in the kept history.</p>"
            : Layout.table(
                ["run", "key", "operation", "outcome", "reason", "when"],
                problemRows.map {
                    [
                        "\($0.0)", "\(visit.mask.visible ? $0.1 : "(masked)")", "\($0.2)", "\($0.3)", "\($0.4 ?? "")",
                        "\(Layout.time($0.5))",
                    ]
                })
        func button(_ action: String, _ label: String) -> HTML {
            """
            <form method="post" action="/console/syncs/\(percentEncoded(name))/\(action)" class="inline">
            <input type="hidden" name="csrf" value="\(visit.session.csrf)"><button type="submit">\(label)</button></form>
            """
        }
        let toggle: HTML =
            visit.session.token.allows(.admin)
            ? "\(button(enabled ? "disable" : "enable", enabled ? "Disable" : "Enable")) \(button("run", "Run now")) \(button("replay", "Replay rejected rows"))"
            : ""
        let notice: HTML = visit.query["notice"].map { "<p class=\"notice\">\($0)</p>" } ?? ""
        let pretty = (try? JSONParser.parse(Array(definition.utf8)).prettyPrinted) ?? definition
        return page(
            .ok, title: "Sync \(name)", session: visit.session,
            body: """
                <h1>Sync <code>\(name)</code></h1>\(notice)
                <p>\(enabled ? "Enabled" : "Disabled")\(nextRun.map { "; next scheduled run \(Layout.time($0))" } ?? ""). \(toggle)</p>
                <p class="hint">From the command line: <code>tributary syncs run \(name)</code>,
                <code>tributary syncs replay \(name) --rejected</code>.</p>
                <section><h2>Runs</h2>\(chart)\(runTable)\(Layout.sql(runs))</section>
                <section><h2>Rejected and failed rows\(selectedRun.map { " of run \($0)" } ?? "")</h2>\(problemTable)\(Layout.sql(problems))</section>
                <section><h2>Definition</h2><pre>\(pretty)</pre>\(Layout.sql(state))</section>
                """)
    }

    func setSync(_ name: String, enabled: Bool, _ visit: Visit, _ request: Request) async throws -> Response {
        let changed = try await client.withTransaction { tx in
            let rows = try await tx.query(ConsoleQueries.setSyncEnabled(name, enabled))
            if !rows.isEmpty {
                try await AuditLog.record(
                    tx, actor: .init("console:\(visit.session.token.name)"), action: enabled ? "syncs.enable" : "syncs.disable",
                    target: name)
            }
            return !rows.isEmpty
        }
        guard changed else { throw ConsoleError("no sync named '\(name)'") }
        return Self.redirect("/console/syncs/\(percentEncoded(name))")
    }

    func governance(_ visit: Visit, _ request: Request) async throws -> Response {
        let (privacy, audit, tokens) = (ConsoleQueries.privacyRequests, ConsoleQueries.auditLog, ConsoleQueries.apiTokens)
        let (privacyRows, auditRows, tokenRows) = try await client.withConnection { db in
            (
                try await db.query(privacy).map {
                    try $0.decode((Int64, String, String, String, String, String, Date, Date?, String, String?).self)
                },
                try await db.query(audit).map { try $0.decode((Date, String, String, String?, String).self) },
                try await db.query(tokens).map { try $0.decode((String, String, String, Date, Date?).self) }
            )
        }
        return page(
            .ok, title: "Governance", session: visit.session,
            body: """
                <h1>Governance</h1>
                <section><h2>Privacy requests</h2>\(Layout.table(
                    ["id", "kind", "status", "by", "identifier", "requested", "finished", "counts", "error"],
                    privacyRows.map { r -> [HTML] in
                        ["\(r.0)", "\(r.1)", "\(r.2)", "\(r.3)", "\(r.4) (hash \(r.5)…)", "\(Layout.time(r.6))", "\(Layout.time(r.7))",
                         "\(r.8)", "\(r.9 ?? "")"]
                    }))\(Layout.sql(privacy))
                <p class="hint">Requests are made with <code>tributary privacy delete|export KIND:VALUE</code> or
                <code>POST /v1/privacy/…</code>; identifiers are kept only as hashes.</p></section>
                <section><h2>Audit log</h2>\(Layout.table(
                    ["when", "actor", "action", "target", "details"],
                    auditRows.map { ["\(Layout.time($0.0))", "\($0.1)", "\($0.2)", "\($0.3 ?? "")", "\($0.4)"] }))\(Layout.sql(audit))</section>
                <section><h2>API tokens</h2>\(Layout.table(
                    ["name", "hint", "scopes", "created", "revoked"],
                    tokenRows.map { ["\($0.0)", "\($0.1)…", "\($0.2)", "\(Layout.time($0.3))", "\(Layout.time($0.4))"] }))\(Layout.sql(tokens))
                <p class="hint">Secrets are stored only as SHA-256: only the first characters are shown.</p></section>
                """)
    }

    // MARK: - Responses

    func page(_ status: HTTPResponse.Status, title: String, session: ConsoleSessions.Session?, body: HTML) -> Response {
        Self.html(status, Layout.page(title: title, session: session, body: body))
    }

    static func html(_ status: HTTPResponse.Status, _ html: HTML) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        // Only the console's own script files run (no inline script); styles are the page's own; forms post only here;
        // no framing.
        headers[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html.text)))
    }

    static func plain(_ status: HTTPResponse.Status, _ message: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: message + "\n")))
    }

    static func redirect(_ location: String) -> Response {
        var headers = HTTPFields()
        headers[.location] = location
        headers[.cacheControl] = "no-store"
        return Response(status: .seeOther, headers: headers)
    }

    /// `Set-Cookie` for the console: HttpOnly, SameSite=Strict, path /console, Secure when the request came over TLS.
    static func cookie(_ name: String, _ value: String, request: Request, maxAge: Int) -> String {
        let secure =
            request.uri.scheme?.rawValue == "https"
            || request.headers[HTTPField.Name("X-Forwarded-Proto")!]?.lowercased() == "https"
        return "\(name)=\(value); Path=/console; Max-Age=\(maxAge); HttpOnly; SameSite=Strict\(secure ? "; Secure" : "")"
    }

    /// The request's `application/x-www-form-urlencoded` body (at most 64 KiB).
    static func form(_ request: Request) async -> [String: String] {
        guard let buffer = try? await request.body.collect(upTo: 64 * 1024) else { return [:] }
        var result: [String: String] = [:]
        for pair in String(buffer: buffer).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ text: Substring) -> String {
                String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
            }
            guard let key = parts.first else { continue }
            result[decode(key)] = parts.count > 1 ? decode(parts[1]) : ""
        }
        return result
    }
}

/// A page's problem for the visitor (a profile or segment that does not exist): 404 with the message.
struct ConsoleError: ReportedError {
    var message: String
    var status: HTTPResponse.Status = .notFound
    init(_ message: String) { self.message = message }
    var description: String { message }
}
