import Foundation
import Postgres
import TributaryModel

/// The audit log (`cdp.audit_log`): who did what to which target, and when. Every administrative action records one
/// entry, in the same transaction as the action where it has one, so an action and its entry commit together.
///
/// ```swift
/// try await AuditLog.record(tx, actor: .cli, action: "syncs.apply", target: "crm_sync", details: ["added": 1])
/// let recent = try await AuditLog(client: client).entries(limit: 50)
/// ```
public struct AuditLog: Sendable {
    /// Who acted.
    public struct Actor: Sendable, Equatable, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }

        /// The command line, as the operating-system user running it (`cli:alice`).
        public static var cli: Actor {
            let environment = ProcessInfo.processInfo.environment
            // The account the process runs as; $USER only when the system has no name for it (a container's uid).
            let account = getpwuid(geteuid()).flatMap { $0.pointee.pw_name.map { String(cString: $0) } }
            return Actor("cli:\(account ?? environment["USER"] ?? environment["LOGNAME"] ?? "uid \(geteuid())")")
        }

        /// An HTTP request authenticated with the named API token (`token:support-tool`).
        public static func token(_ name: String) -> Actor { Actor("token:\(name)") }

        /// Tributary itself, acting on a schedule (`tributary:retention`).
        public static func system(_ process: String) -> Actor { Actor("tributary:\(process)") }
    }

    /// One recorded action.
    public struct Entry: Sendable, Equatable {
        public var id: Int64
        public var at: Date
        public var actor: String
        public var action: String
        public var target: String?
        public var details: JSONValue
    }

    let client: PostgresClient

    public init(client: PostgresClient) { self.client = client }

    /// Records an action on `db` (a transaction, to commit with the action). `action` is dotted, area first
    /// (`privacy.delete`, `syncs.apply`, `tokens.create`); `details` must not hold secrets or raw identifiers of
    /// deleted people.
    public static func record(
        _ db: PostgresConnection, actor: Actor, action: String, target: String? = nil, details: JSONValue = .object([])
    ) async throws {
        try await db.execute(
            """
            INSERT INTO cdp.audit_log (actor, action, target, details)
            VALUES (\(actor.description), \(action), \(target), \(details.serialized)::jsonb)
            """)
    }

    /// Records an action in a transaction of its own.
    public func record(actor: Actor, action: String, target: String? = nil, details: JSONValue = .object([])) async throws {
        try await client.withConnection {
            try await Self.record($0, actor: actor, action: action, target: target, details: details)
        }
    }

    /// The newest entries first, optionally only actions starting with `prefix` (`privacy.`).
    public func entries(actionPrefix prefix: String? = nil, limit: Int = 50) async throws -> [Entry] {
        try await client.query(
            """
            SELECT audit_id, at, actor, action, target, details::text FROM cdp.audit_log
            WHERE starts_with(action, \(prefix ?? "")) ORDER BY audit_id DESC LIMIT \(limit)
            """
        ).map { row in
            let (id, at, actor, action, target, details) = try row.decode((Int64, Date, String, String, String?, String).self)
            return Entry(
                id: id, at: at, actor: actor, action: action, target: target, details: try JSONParser.parse(Array(details.utf8)))
        }
    }
}
