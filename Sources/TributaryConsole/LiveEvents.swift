import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Postgres
import TributaryCollection
import TributaryModel
import TributaryProfiles

/// The live events screen: the newest events, filtered by source, type and event name, each with a pretty and a raw
/// view of its payload and what became of it (stamped with a profile by the identity stage, passed by the profile
/// stage). The page is complete without JavaScript (reload it for newer events); with it, `live.js` (the console's
/// own, served from `/console/assets/live.js`) adds events as they arrive over server-sent events, as text only.
extension Console {
    struct LiveFilter {
        var source: String
        var type: String
        var event: String

        init(_ query: [String: String]) {
            source = query["source"]?.trimmingCharacters(in: .whitespaces) ?? ""
            type = query["type"]?.trimmingCharacters(in: .whitespaces) ?? ""
            event = query["event"]?.trimmingCharacters(in: .whitespaces) ?? ""
        }

        var queryString: String {
            "source=\(percentEncoded(source))&type=\(percentEncoded(type))&event=\(percentEncoded(event))"
        }
    }

    /// One event as the screen shows it (masked for the reader).
    struct LiveEvent {
        var seq: Int64, received: Date, source: String, type: String, name: String, who: String, profile: UUID?,
            stamped: Bool, profiled: Bool, pretty: String, raw: String

        var stage: String {
            stamped ? (profiled ? "stamped, profiled" : "stamped, awaiting the profile stage") : "awaiting the identity stage"
        }

        /// The server-sent event's JSON (text values only: the script sets them as text).
        var json: String {
            JSONValue.object([
                ("seq", .number(String(seq))), ("time", .string(Layout.time(received))), ("source", .string(source)),
                ("type", .string(type)), ("name", .string(name)), ("who", .string(who)),
                ("profile", profile.map { .string($0.uuidString.lowercased()) } ?? .null), ("stage", .string(stage)),
                ("pretty", .string(pretty)), ("raw", .string(raw)),
            ]).serialized
        }

        var row: HTML {
            let profileCell: HTML = profile.map { Layout.link("/console/profiles/", $0.uuidString.lowercased()) } ?? "–"
            return """
                <tr><td>\(Layout.time(received))</td><td>\(source)</td><td>\(type)</td><td>\(name)</td><td>\(who)</td>\
                <td>\(profileCell)</td><td>\(stage)</td><td><details><summary>payload</summary><pre>\(pretty)</pre></details>\
                <details><summary>raw</summary><pre>\(raw)</pre></details></td></tr>
                """
        }
    }

    func live(_ visit: Visit, _ request: Request) async throws -> Response {
        let filter = LiveFilter(visit.query)
        let query = ConsoleQueries.liveEvents(
            source: filter.source, type: filter.type, event: filter.event, after: 0, newestFirst: true)
        let events = try await liveEvents(query, mask: visit.mask)
        let newest = events.first?.seq ?? 0
        let sources = try await client.query("SELECT source_id, name FROM cdp.sources").map {
            try $0.decode((String, String).self)
        }
        let names = Dictionary(sources, uniquingKeysWith: { a, _ in a })
        let recent = await writer?.recentlyNotStored ?? []
        let notStored = Layout.table(
            ["received", "source", "type", "event / name", "message id", "outcome"],
            recent.filter {
                (filter.source.isEmpty || names[$0.sourceID] == filter.source) && (filter.type.isEmpty || $0.type == filter.type)
            }
            .prefix(50).map {
                [
                    "\(Layout.time($0.receivedAt))", "\(names[$0.sourceID] ?? $0.sourceID)", "\($0.type)", "\($0.name ?? "")",
                    "\($0.messageID)", "\($0.outcome.rawValue)",
                ]
            })
        let types = ["", "track", "identify", "page", "screen", "group", "alias"]
        let typeOptions = HTML.joined(
            types.map {
                "<option value=\"\($0)\"\(filter.type == $0 ? " selected" : "")>\($0.isEmpty ? "any type" : $0)</option>" as HTML
            })
        return page(
            .ok, title: "Live events", session: visit.session,
            body: """
                <h1>Live events</h1>
                <form method="get" action="/console/live" class="search">
                <input name="source" value="\(filter.source)" placeholder="source name"> <select name="type">\(typeOptions)</select>
                <input name="event" value="\(filter.event)" placeholder="event or page name"> <button type="submit">Filter</button></form>
                <p class="hint">The newest 50 events; new ones appear at the top as they are stored (reload without JavaScript).
                Retries of a stored event (same messageId) and events of deleted people are not stored, so they do not appear.</p>
                <table id="live" data-stream="/console/live/stream?\(filter.queryString)&amp;after=\(newest)"><thead><tr>
                <th>received</th><th>source</th><th>type</th><th>event / name</th><th>user / anonymous id</th><th>profile</th>
                <th>what happened</th><th>payload</th></tr></thead><tbody>\(events.map(\.row))</tbody></table>
                \(Layout.sql(query))
                <section><h2>Answered but not stored (this process, newest first)</h2>\(notStored)
                <p class="hint">Retries of stored messages (duplicates) and calls of deleted people (suppressed), as this
                serving process answered them; a suppressed call's identifiers and message id are not kept.</p></section>
                <script src="/console/assets/live.js"></script>
                """)
    }

    /// `text/event-stream` of the events after `after` (or the `Last-Event-ID` a reconnecting browser sends), polled
    /// every half second, at most the newest 50 each time; the stream ends after five minutes and the browser
    /// reconnects where it left off.
    func liveStream(_ visit: Visit, _ request: Request) async throws -> Response {
        let filter = LiveFilter(visit.query)
        let resume = request.headers[HTTPField.Name("Last-Event-ID")!].flatMap { Int64($0) }
        let start = resume ?? visit.query["after"].flatMap { Int64($0) } ?? 0
        let mask = visit.mask
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-store"
        let console = self
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                let end = ContinuousClock.now + .seconds(300)
                var after = start
                try await writer.write(ByteBuffer(string: "retry: 1000\n\n"))
                while ContinuousClock.now < end, !Task.isCancelled {
                    // The newest 50 after the last sent, oldest first: a screen that fell behind (thousands of events a
                    // second) skips ahead instead of replaying everything, so its cost stays bounded at any rate.
                    let events = try await console.liveEvents(
                        ConsoleQueries.liveEvents(
                            source: filter.source, type: filter.type, event: filter.event, after: after, newestFirst: true),
                        mask: mask
                    ).reversed()
                    for event in events {
                        try await writer.write(ByteBuffer(string: "id: \(event.seq)\ndata: \(event.json)\n\n"))
                        after = event.seq
                    }
                    if events.isEmpty { try await writer.write(ByteBuffer(string: ": waiting\n\n")) }
                    try await Task.sleep(for: .milliseconds(500))
                }
                try await writer.finish(nil)
            })
    }

    func liveEvents(_ query: PostgresQuery, mask: PIIMask) async throws -> [LiveEvent] {
        try await client.query(query).map { row in
            let (seq, received, source, type, name, user, anonymous, profile, stamped, profiled, payload, raw) = try row.decode(
                (Int64, Date, String, String, String?, String?, String?, UUID?, Bool, Bool, String, String).self)
            func shown(_ text: String) -> String {
                guard let value = try? JSONParser.parse(Array(text.utf8)) else { return text }
                return mask.json(value).prettyPrinted
            }
            let who = [user.map { "user \(mask.identifier(kind: "user_id", $0))" }, anonymous.map { "anon \($0)" }]
                .compactMap { $0 }.joined(separator: ", ")
            return LiveEvent(
                seq: seq, received: received, source: source, type: type, name: name ?? "", who: who, profile: profile,
                stamped: stamped, profiled: profiled, pretty: shown(payload), raw: shown(raw))
        }
    }

    /// The console's own script for the live screen.
    static func script() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/javascript; charset=utf-8"
        headers[.cacheControl] = "max-age=300"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: liveScript)))
    }

    static var liveScript: String {
        """
        // Tributary console: adds the events of the page's server-sent event stream to the top of its table.
        // Values are set as text, never as HTML.
        (function () {
          var table = document.getElementById('live');
          if (!table || !window.EventSource) { return; }
          var body = table.tBodies[0];
          var stream = new EventSource(table.getAttribute('data-stream'));
          function cell(row, text) { var td = document.createElement('td'); td.textContent = text || ''; row.appendChild(td); return td; }
          function fold(parent, title, text) {
            var details = document.createElement('details');
            var summary = document.createElement('summary'); summary.textContent = title; details.appendChild(summary);
            var pre = document.createElement('pre'); pre.textContent = text; details.appendChild(pre);
            parent.appendChild(details);
          }
          stream.onmessage = function (message) {
            var e = JSON.parse(message.data);
            var row = document.createElement('tr');
            row.className = 'new';
            [e.time, e.source, e.type, e.name, e.who].forEach(function (text) { cell(row, text); });
            var profile = cell(row, e.profile ? '' : '–');
            if (e.profile) {
              var link = document.createElement('a');
              link.href = '/console/profiles/' + encodeURIComponent(e.profile);
              link.textContent = e.profile;
              profile.appendChild(link);
            }
            cell(row, e.stage);
            var payload = cell(row, '');
            fold(payload, 'payload', e.pretty);
            fold(payload, 'raw', e.raw);
            body.insertBefore(row, body.firstChild);
            while (body.rows.length > 200) { body.deleteRow(body.rows.length - 1); }
          };
        })();
        """
    }
}
