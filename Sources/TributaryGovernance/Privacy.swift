import Foundation
import Logging
import Postgres
import TributaryModel
import TributaryProfiles

/// Privacy requests about one person, named by one of their identifiers (`email:ann@example.com`): deletion (the
/// right to erasure), an access export, and consent recorded on their behalf.
///
/// Every request is logged in `cdp.privacy_requests` and the audit log (`privacy.delete`, `privacy.export`,
/// `privacy.consent`) with the identifier's kind and its SHA-256 (``identifierHash(_:)``), never the identifier itself.
///
/// ```swift
/// let privacy = PrivacyRequests(client: client, logger: logger)
/// let report = try await privacy.delete(identifier: "email:ann@example.com", actor: .cli, registry: .standard())
/// try await privacy.export(identifier: "user_id:u-1", actor: .cli) { chunk in print(chunk, terminator: "") }
/// try await privacy.recordConsent(identifier: "user_id:u-1", purposes: ["Marketing": false], actor: .cli, writer: writer)
/// ```
public struct PrivacyRequests: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// The person a request is about, as far as Tributary knows them.
    struct Subject: Sendable {
        /// The identifier asked about, normalized.
        var requested: Identifier
        /// Live profiles holding it (none when nobody holds it: only events not yet resolved may carry it).
        var profiles: [UUID]
        /// The live profiles and every profile id merged into them.
        var profileIDs: [UUID]
        /// Every identifier of the profiles, and the one asked about; not hubs (shared by many people, they are no one's
        /// to delete or suppress).
        var identifiers: [Identifier]
    }

    /// SHA-256 in lower-case hex of `kind:value` (a normalized identifier), as `cdp.suppressions` and
    /// `cdp.privacy_requests` hold it; identical to SQL `cdp.identifier_hash(kind, value)`.
    public static func identifierHash(_ identifier: Identifier) -> String {
        sha256Hex(Data("\(identifier.kind):\(identifier.value)".utf8))
    }

    /// Parses `KIND:VALUE`, normalizes the value as the identity stage does, and finds the profile holding it.
    /// Throws ``PrivacyError`` with a one-line message for input that names nobody.
    func resolve(_ text: String) async throws -> Subject {
        if text.utf8.contains(0) { throw PrivacyError("the identifier contains a NUL character") }
        let parsed: Identifier
        do { parsed = try Identifier(parsing: text) } catch let error as IdentityError { throw PrivacyError(error.description) }
        if parsed.value.trimmingCharacters(in: .whitespaces).isEmpty {
            throw PrivacyError("the identifier '\(parsed.kind):' has an empty value")
        }
        let lookup = try await ProfileDocuments(client: client).lookup(kind: parsed.kind, value: parsed.value, events: 0)
        var profiles: [UUID] = []
        switch lookup {
        case .found(let document):
            guard case .string(let id)? = try JSONParser.parse(Array(document.utf8))["profile_id"],
                let profile = UUID(uuidString: id)
            else {
                throw PrivacyError("the profile document has no profile_id")
            }
            profiles = [profile]
        case .notFound(let identifier, let problem):
            if parsed.kind == ProfileDocuments.profileIDKind { throw PrivacyError(lookup.message ?? "no such profile") }
            // A value the identity stage refuses (blocked, not an email, ...) names nobody; suppressing it could drop
            // other people's events (`user_id:null`).
            if problem != nil { throw PrivacyError(lookup.message ?? "the identifier is refused") }
            return Subject(requested: identifier, profiles: [], profileIDs: [], identifiers: [identifier])
        case .hub, .unknownKind, .invalidKind, .invalidValue:
            throw PrivacyError(lookup.message ?? "the identifier is not valid")
        }
        // The live profiles and every old id that now resolves to one of them (one lookup in the flat redirect table,
        // not a walk of the merge log: Citus runs no recursive query over a distributed table).
        let profileIDs = try await client.query(
            """
            SELECT id FROM unnest(\(profiles)::uuid[]) AS id
            UNION
            SELECT r.from_profile_id FROM cdp.profile_redirects AS r WHERE r.profile_id = ANY(\(profiles)::uuid[])
            """
        ).map { try $0[0].decode(UUID.self) }
        let identifiers = try await client.query(
            """
            SELECT kind, value FROM cdp.identity_nodes WHERE profile_id = ANY(\(profiles)::uuid[]) AND status <> 'hub'
            ORDER BY first_seq, node_id
            """
        ).map { row in
            let (kind, value) = try row.decode((String, String).self)
            return Identifier(kind: kind, value: value)
        }
        let requested: Identifier
        if parsed.kind == ProfileDocuments.profileIDKind {
            requested = Identifier(kind: parsed.kind, value: profiles[0].uuidString.lowercased())
        } else {
            let normalized = try await client.query(
                """
                SELECT n.value FROM (SELECT coalesce((SELECT rules FROM cdp.identity_rules WHERE id = 1), '{}') AS document) AS r,
                     cdp.identifier_normalize(\(parsed.kind), \(parsed.value), r.document) AS n
                """)
            requested = Identifier(kind: parsed.kind, value: try normalized.first?[0].decode(String?.self) ?? parsed.value)
        }
        return Subject(requested: requested, profiles: profiles, profileIDs: profileIDs, identifiers: identifiers)
    }

    // MARK: - The request log

    /// Starts a request in `cdp.privacy_requests` (committed at once, so a failure is logged too); returns its id.
    func begin(_ kind: String, _ identifier: Identifier, actor: AuditLog.Actor) async throws -> Int64 {
        try await client.query(
            """
            INSERT INTO cdp.privacy_requests (kind, actor, identifier_kind, identifier_hash)
            VALUES (\(kind), \(actor.description), \(identifier.kind), \(Self.identifierHash(identifier)))
            RETURNING request_id
            """
        ).scalar(Int64.self)
    }

    /// Finishes a request and records it in the audit log, on `db` (the transaction of the action, if it has one).
    static func finish(
        _ db: PostgresConnection, request: Int64, kind: String, identifier: Identifier, actor: AuditLog.Actor,
        counts: JSONValue, error: String? = nil, details: [(String, JSONValue)] = []
    ) async throws {
        try await db.execute(
            """
            UPDATE cdp.privacy_requests SET status = \(error == nil ? "succeeded" : "failed"), finished_at = clock_timestamp(),
                   counts = \(counts.serialized)::jsonb, error = \(error)
            WHERE request_id = \(request)
            """)
        var audit: [(String, JSONValue)] = [
            ("request_id", .number(String(request))), ("identifier_kind", .string(identifier.kind)),
            ("identifier_hash", .string(identifierHash(identifier))), ("status", .string(error == nil ? "succeeded" : "failed")),
            ("counts", counts),
        ]
        if let error { audit.append(("error", .string(error))) }
        try await AuditLog.record(
            db, actor: actor, action: "privacy.\(kind)", target: "privacy_request:\(request)",
            details: .object(audit + details))
    }

    /// Marks a request failed (in a transaction of its own) and returns `error` to throw. The error is logged with
    /// the person's identifiers and profile ids replaced (a destination's answer may quote them), so the log keeps
    /// no trace of a person deleted later.
    func fail(_ error: any Error, request: Int64, kind: String, subject: Subject, actor: AuditLog.Actor) async -> any Error {
        let message = Self.redacted("\(error)", subject)
        do {
            try await client.withTransaction { tx in
                try await Self.finish(
                    tx, request: request, kind: kind, identifier: subject.requested, actor: actor, counts: [:],
                    error: message)
            }
        } catch let logging {
            logger.error("recording a failed privacy request failed", metadata: ["request": "\(request)", "error": "\(logging)"])
        }
        return error
    }

    /// `text` with the person's identifiers and profile ids replaced by `[identifier]`, for what is logged.
    static func redacted(_ text: String, _ subject: Subject) -> String {
        let names = subject.identifiers.map(\.value) + [subject.requested.value] + subject.profileIDs.map(\.uuidString)
        return names.filter { !$0.isEmpty }.sorted { $0.count > $1.count }.reduce(text) {
            $0.replacingOccurrences(of: $1, with: "[identifier]", options: .caseInsensitive)
        }
    }

    /// One row of ``requests(limit:)``.
    public struct Request: Sendable, Equatable {
        public var id: Int64
        public var kind: String
        public var status: String
        public var actor: String
        public var identifierKind: String
        public var identifierHash: String
        public var requestedAt: Date
        public var finishedAt: Date?
        public var counts: JSONValue
        public var error: String?
    }

    /// The newest privacy requests first.
    public func requests(limit: Int = 50) async throws -> [Request] {
        try await client.query(
            """
            SELECT request_id, kind, status, actor, identifier_kind, identifier_hash, requested_at, finished_at, counts::text, error
            FROM cdp.privacy_requests ORDER BY request_id DESC LIMIT \(limit)
            """
        ).map { row in
            let (id, kind, status, actor, identifierKind, hash, requested, finished, counts, error) =
                try row.decode((Int64, String, String, String, String, String, Date, Date?, String, String?).self)
            return Request(
                id: id, kind: kind, status: status, actor: actor, identifierKind: identifierKind, identifierHash: hash,
                requestedAt: requested, finishedAt: finished, counts: try JSONParser.parse(Array(counts.utf8)), error: error)
        }
    }

    // MARK: - Shared SQL

    /// The texts a sync row about the person may hold: identifier values (lower-cased, phones also as digits), their
    /// `cdp.pii_hash` forms (what hashed sync fields send) and the profile ids.
    static func needles(_ db: PostgresConnection, _ subject: Subject) async throws -> [String] {
        try await db.query(
            """
            SELECT coalesce(array_agg(DISTINCT n), '{}') FROM (
                SELECT lower(btrim(v)) FROM unnest(\(subject.identifiers.map(\.value))::text[]) AS v
                UNION ALL SELECT regexp_replace(v, '[^0-9]', '', 'g') FROM unnest(\(subject.identifiers.map(\.value))::text[]) AS v
                          WHERE v ~ '^\\+?[0-9]+$'
                UNION ALL SELECT cdp.pii_hash(i.value, CASE WHEN i.kind IN ('email', 'phone') THEN i.kind ELSE 'text' END)
                          FROM unnest(\(subject.identifiers.map(\.kind))::text[], \(subject.identifiers.map(\.value))::text[]) AS i (kind, value)
                UNION ALL SELECT id::text FROM unnest(\(subject.profileIDs)::uuid[]) AS id
            ) AS all_needles (n) WHERE n IS NOT NULL AND n <> ''
            """
        ).scalar([String].self)
    }

    /// The shortest needle matched in the fields of a sync row (any length matches in its key): a short identifier
    /// (`user_id:7`) must not match another person's field that happens to hold the same text (`"quantity": "7"`).
    static let minimumFieldMatch = 6

    /// A condition true when the sync row with key `key` and fields `fields` (JSON expressions; nil: no fields) is
    /// about the person: a value at any depth (strings and numbers, trimmed and lower-cased) is one of `needles` (in the
    /// fields, only needles of at least ``minimumFieldMatch`` characters). `key` and `fields` are Tributary's own SQL.
    static func mentions(key: String, fields: String?, needles: [String]) -> PostgresQuery {
        func values(_ json: String, minimum: Int) -> PostgresQuery {
            """
            EXISTS (SELECT 1 FROM jsonb_path_query(\(unescaped: json), 'strict $.**') AS found (item)
                    WHERE jsonb_typeof(found.item) IN ('string', 'number') AND length(found.item #>> '{}') >= \(unescaped: String(minimum))
                      AND lower(btrim(found.item #>> '{}')) = ANY(\(needles)::text[]))
            """
        }
        guard let fields else { return values(key, minimum: 1) }
        return "(\(values(key, minimum: 1)) OR \(values(fields, minimum: minimumFieldMatch)))"
    }

    /// A condition true when event `e` names one of the identifiers in `pg_temp.tributary_privacy_ids`, extracted
    /// under `rules` (`cdp.event_identifiers`: an alias call's previousId counts, as a user id and as an anonymous id).
    static func carriesIdentifier(rules: String) -> PostgresQuery {
        """
        EXISTS (SELECT 1 FROM cdp.event_identifiers(e.type, e.user_id, e.anonymous_id, e.previous_id, e.traits, e.context,
                                                    \(rules)::jsonb) AS c
                JOIN pg_temp.tributary_privacy_ids AS i ON i.kind = c.kind AND i.value = c.value)
        """
    }

    /// Fills `pg_temp.tributary_privacy_ids` (kind, value) and `pg_temp.tributary_privacy_profiles` (profile_id)
    /// for the rest of the transaction, adding the profiles the live ones were merged into since and every identifier
    /// the profiles hold now (hubs excepted).
    static func stageSubject(_ tx: PostgresConnection, _ subject: Subject) async throws {
        try await tx.execute(
            """
            CREATE TEMP TABLE tributary_privacy_profiles ON COMMIT DROP AS
            SELECT id AS profile_id FROM unnest(\(subject.profileIDs)::uuid[]) AS id
            UNION SELECT cdp.resolve_profile(id) FROM unnest(\(subject.profiles)::uuid[]) AS id WHERE cdp.resolve_profile(id) IS NOT NULL
            """)
        try await tx.execute(
            """
            CREATE TEMP TABLE tributary_privacy_ids ON COMMIT DROP AS
            SELECT kind, value FROM unnest(\(subject.identifiers.map(\.kind))::text[], \(subject.identifiers.map(\.value))::text[])
                AS i (kind, value)
            UNION
            SELECT n.kind, n.value FROM cdp.identity_nodes AS n
            WHERE n.profile_id IN (SELECT profile_id FROM pg_temp.tributary_privacy_profiles) AND n.status <> 'hub'
            """)
    }

    /// The identity rules document in force (`{}`: the defaults).
    static func rulesDocument(_ db: PostgresConnection) async throws -> String {
        try await db.query("SELECT coalesce((SELECT rules FROM cdp.identity_rules WHERE id = 1), '{}')::text").scalar(String.self)
    }
}

/// A privacy request that cannot be carried out, with a one-line message for the person who made it.
public struct PrivacyError: ReportedError, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A destination failed to delete a person's rows: nothing was deleted locally, so the request can be retried.
public struct PrivacyDestinationError: ReportedError, Equatable {
    /// The sync whose destination failed.
    public var sync: String
    public var reason: String
    public init(sync: String, reason: String) {
        self.sync = sync
        self.reason = reason
    }
    public var description: String {
        "deleting at the destination of sync '\(sync)' failed: \(reason); nothing was deleted, so the request can be retried "
            + "(or skip destinations to delete here anyway)"
    }
}
