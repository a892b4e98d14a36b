import Foundation
import Postgres
import TributaryModel
import TributaryProfiles

/// The console's page frame and the small pieces every page uses.
enum Layout {
    static func page(title: String, session: ConsoleSessions.Session?, body: HTML) -> HTML {
        let navigation: HTML =
            if let session {
                """
                <nav><a href="/console">Overview</a> <a href="/console/live">Live events</a> <a href="/console/profiles">Profiles</a> <a href="/console/segments">Segments</a>
                <a href="/console/syncs">Syncs</a> <a href="/console/governance">Governance</a>
                <span class="who">\(session.token.name) (\(session.token.scopes.map(\.rawValue).joined(separator: ", ")))
                <form method="post" action="/console/logout" class="inline"><input type="hidden" name="csrf" value="\(session.csrf)">
                <button type="submit">Sign out</button></form></span></nav>
                """
            } else {
                ""
            }
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title) · Tributary</title><style>\(style)</style></head>
            <body>\(navigation)<main>\(body)</main></body></html>
            """
    }

    static let style: HTML = """
        body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#111;background:#fafafa}
        nav{background:#0f172a;padding:.6em 1em}nav a{color:#e2e8f0;margin-right:1.2em;text-decoration:none}
        nav .who{float:right;color:#94a3b8}main{padding:1em 2em;max-width:1200px}
        section{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:.5em 1em;margin:1em 0}
        table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #eee;
        vertical-align:top}th{background:#f1f5f9}pre{background:#f8fafc;padding:.6em;overflow:auto;white-space:pre-wrap}
        .problem{color:#b91c1c}.notice{background:#ecfdf5;padding:.4em .8em}.hint,.empty{color:#64748b}.inline{display:inline}
        svg text{font-size:10px;fill:#475569}svg .grid{stroke:#e2e8f0}figure{margin:0}
        .swatch{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 .8em}
        details summary{cursor:pointer;color:#2563eb}
        """

    /// A table; the cells are HTML already (built with escaping).
    static func table(_ headers: [String], _ rows: [[HTML]]) -> HTML {
        if rows.isEmpty { return "<p class=\"empty\">None.</p>" }
        let head = HTML.joined(headers.map { "<th>\($0)</th>" as HTML })
        let body = HTML.joined(rows.map { "<tr>\(HTML.joined($0.map { "<td>\($0)</td>" as HTML }))</tr>" as HTML })
        return "<table><thead><tr>\(head)</tr></thead><tbody>\(body)</tbody></table>"
    }

    /// A link to `prefix` + the percent-encoded `name`, showing the name.
    static func link(_ prefix: String, _ name: String) -> HTML {
        "<a href=\"\(prefix)\(percentEncoded(name))\">\(name)</a>"
    }

    /// "show SQL": the query with its values inlined, as psql takes it.
    static func sql(_ query: PostgresQuery) -> HTML {
        let text = (try? query.inlined().sql) ?? query.sql
        return "<details><summary>show SQL</summary><pre>\(text)</pre></details>"
    }

    static func time(_ date: Date?) -> String {
        guard let date else { return "–" }
        return date.formatted(
            Date.ISO8601FormatStyle().year().month().day().dateTimeSeparator(.space).time(includingFractionalSeconds: false))
    }

    static func clock(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle().time(includingFractionalSeconds: false)).prefix(5).description
    }

    static func day(_ date: Date) -> String { date.formatted(Date.ISO8601FormatStyle().year().month().day()) }
}

/// Personal data masked for a reader without the `pii` scope, with the keys and the rule of the `analyst.*` views
/// (`cdp.pii_keys`, `cdp.pii_mask`): `j***@example.com` for emails, the last four characters of anything else.
struct PIIMask: Sendable {
    var visible: Bool
    var keys: Set<String>
    /// Identifier kinds that are personal data: email, phone, and kinds named like a PII key.
    func identifier(kind: String, _ value: String) -> String {
        visible || !(kind == "email" || kind == "phone" || keys.contains(kind)) ? value : Self.mask(value)
    }

    /// A trait's value as the page shows it (JSON text), masked when its key is a PII key.
    func value(key: String, _ value: JSONValue) -> String {
        guard !visible, keys.contains(key) else { return value.serialized }
        switch value {
        case .null: return "null"
        case .string, .number, .bool: return Self.mask(value.plainText)
        case .array, .object: return "\"***\""
        }
    }

    /// `value` with every member named by a PII key masked, at any depth (events' payloads).
    func json(_ value: JSONValue) -> JSONValue {
        guard !visible else { return value }
        switch value {
        case .object(let members):
            return .object(
                members.map { key, member in
                    guard keys.contains(key) else { return (key, json(member)) }
                    switch member {
                    case .null: return (key, .null)
                    case .string, .number, .bool: return (key, .string(Self.mask(member.plainText)))
                    case .array, .object: return (key, .string("***"))
                    }
                })
        case .array(let items): return .array(items.map(json))
        default: return value
        }
    }

    static func load(_ client: PostgresClient, visible: Bool) async throws -> PIIMask {
        if visible { return PIIMask(visible: true, keys: []) }
        let keys =
            try await client.query("SELECT keys FROM cdp.pii_keys").first?[0].decode([String]?.self) ?? nil ?? []
        return PIIMask(visible: false, keys: Set(keys))
    }

    /// `cdp.pii_mask`.
    static func mask(_ raw: String) -> String {
        let value = raw.trimmingCharacters(in: .whitespaces)
        if let at = value.firstIndex(of: "@"), at != value.startIndex {
            return String(value.prefix(1)) + "***@" + String(value[value.index(after: at)...].prefix { $0 != "@" })
        }
        if value.count <= 4 { return String(repeating: "*", count: value.count) }
        return String(repeating: "*", count: value.count - 4) + value.suffix(4)
    }
}
