import Foundation
import Logging
import Postgres
import TributaryModel
import TributaryProfiles

/// Applying segment definitions (views `segments."name"`, rows of `cdp.segment_definitions`) and reading them back.
public struct SegmentStore: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    static func decode(_ json: String) throws -> Segment {
        do {
            return try JSONValueDecoder().decode(Segment.self, from: Data(json.utf8))
        } catch let error as DecodingError {
            throw ProfileError("a stored segment cannot be read: \(describe(error)); apply the segments file again")
        }
    }

    /// The catalog and computed trait definitions in force, which segments are validated and typed against.
    static func context(_ db: PostgresConnection) async throws -> (Catalog?, ComputedTraitDefinitions?) {
        (try await ProfileConfig.catalog(db), try await ProfileConfig.load(ComputedTraitDefinitions.self, "computed_traits", db))
    }

    /// Reads a segments file and validates it against the catalog and computed traits in force.
    public func load(_ data: Data) async throws -> SegmentDefinitions {
        let (catalog, computed) = try await client.withConnection { try await Self.context($0) }
        return try SegmentDefinitions.parse(data, catalog: catalog, computed: computed ?? ComputedTraitDefinitions())
    }

    /// The segments in force, in file order.
    public func current() async throws -> SegmentDefinitions {
        try await client.withConnection { try await Self.current($0) }
    }

    /// A compiler of the segments in force, typed by the catalog and computed traits in force: what `segments apply`
    /// compiles with. Code that needs a segment's SQL compiles it from the stored definitions with this, rather than
    /// run SQL text stored earlier.
    public static func compiler(_ db: PostgresConnection) async throws -> SegmentCompiler {
        let (catalog, computed) = try await context(db)
        return SegmentCompiler(try await current(db), catalog: catalog, computed: computed)
    }

    static func current(_ db: PostgresConnection) async throws -> SegmentDefinitions {
        SegmentDefinitions(
            try await db.query("SELECT definition::text FROM cdp.segment_definitions ORDER BY position")
                .map { try decode(try $0.decode(String.self)) })
    }

    /// One segment's change in a plan.
    public struct Change: Sendable {
        public enum Kind: String, Sendable { case added, changed, removed, unchanged }
        public var name: String
        public var kind: Kind
        /// The view's query before (nil: new) and after (nil: removed).
        public var oldSQL: String?
        public var newSQL: String?
        /// Current members (nil: new).
        public var members: Int?
    }

    /// What applying `definitions` would do, segment by segment (file order, then removals).
    public func plan(_ definitions: SegmentDefinitions) async throws -> [Change] {
        try await client.withConnection { db in
            let (catalog, computed) = try await Self.context(db)
            try definitions.validate(catalog: catalog, computed: computed ?? ComputedTraitDefinitions())
            let compiler = SegmentCompiler(definitions, catalog: catalog, computed: computed)
            let stored = try await db.query(
                """
                SELECT d.name, d.view_sql, d.definition::text, (SELECT count(*) FROM cdp.segment_members AS m WHERE m.segment = d.name)
                FROM cdp.segment_definitions AS d ORDER BY d.position
                """
            ).map { try $0.decode((String, String, String, Int).self) }
            let old = Dictionary(uniqueKeysWithValues: stored.map { ($0.0, $0) })
            var changes: [Change] = []
            for segment in definitions.segments {
                let sql = try compiler.select(segment.name).inlined().sql
                guard let before = old[segment.name] else {
                    changes.append(Change(name: segment.name, kind: .added, oldSQL: nil, newSQL: sql, members: nil))
                    continue
                }
                let same = before.1 == sql && (try? Self.decode(before.2)) == segment
                changes.append(
                    Change(
                        name: segment.name, kind: same ? .unchanged : .changed, oldSQL: before.1, newSQL: sql, members: before.3))
            }
            for (name, sql, _, members) in stored where definitions[name] == nil {
                changes.append(Change(name: name, kind: .removed, oldSQL: sql, newSQL: nil, members: members))
            }
            return changes
        }
    }

    /// The number of profiles a query (a plan's `newSQL`) selects now: the size a segment would have.
    public func count(sql: String) async throws -> Int {
        try await client.withTransaction { tx in
            return try await tx.query("SELECT count(*) FROM (\(unescaped: sql)) AS s").first!.decode(Int.self)
        }
    }

    /// Puts `definitions` in force in one transaction: views of new and changed segments are (re)created, removed
    /// segments' views dropped and their members recorded as exited. Returns the plan that was carried out; the
    /// caller refreshes the members of added and changed segments (``SegmentMembership/refresh(_:)``).
    @discardableResult
    public func apply(_ definitions: SegmentDefinitions) async throws -> [Change] {
        let changes = try await plan(definitions)
        try await client.withTransaction { tx in
            try await tx.advisoryTransactionLock(SegmentMembership.lock)
            let (catalog, computed) = try await Self.context(tx)
            let compiler = SegmentCompiler(definitions, catalog: catalog, computed: computed)
            for change in changes where change.kind == .removed {
                try await tx.execute(
                    """
                    INSERT INTO cdp.segment_changes (segment, profile_id, change, reason)
                    SELECT segment, profile_id, 'exited', 'removed' FROM cdp.segment_members WHERE segment = \(change.name)
                    """)
                try await tx.execute("DELETE FROM cdp.segment_definitions WHERE name = \(change.name)")
                try await tx.execute("DROP VIEW IF EXISTS \(unescaped: try compiler.viewName(change.name))")
            }
            for (position, segment) in definitions.segments.enumerated() {
                let change = changes.first { $0.name == segment.name }
                let json = String(decoding: try segment.canonicalJSON(), as: UTF8.self)
                if change?.kind != .unchanged {
                    // Dropped first: CREATE OR REPLACE cannot remove or retype columns.
                    try await tx.execute("DROP VIEW IF EXISTS \(unescaped: try compiler.viewName(segment.name))")
                    try await tx.execute(try compiler.createView(segment.name))
                    if let description = segment.description {
                        try await tx.execute(
                            "COMMENT ON VIEW \(unescaped: try compiler.viewName(segment.name)) IS \(literal: description)")
                    }
                }
                try await tx.execute(
                    """
                    INSERT INTO cdp.segment_definitions (name, definition, view_sql, members_sql, realtime, position)
                    VALUES (\(segment.name), \(json)::jsonb, \(try compiler.select(segment.name).inlined().sql),
                            \(try compiler.members(segment.name).inlined().sql),
                            \(segment.realtime), \(position))
                    ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, view_sql = excluded.view_sql,
                        members_sql = excluded.members_sql,
                        realtime = excluded.realtime, position = excluded.position,
                        applied_at = CASE WHEN cdp.segment_definitions.view_sql = excluded.view_sql
                                           AND cdp.segment_definitions.definition = excluded.definition
                                          THEN cdp.segment_definitions.applied_at ELSE excluded.applied_at END
                    """)
            }
        }
        return changes
    }

    /// A row of `tributary segments list`.
    public struct Summary: Sendable {
        public var name: String
        public var members: Int
        public var realtime: Bool
        public var description: String?
        public var refreshedAt: Date?
        public var refreshMilliseconds: Int?
    }

    public func list() async throws -> [Summary] {
        try await client.query(
            """
            SELECT d.name, (SELECT count(*) FROM cdp.segment_members AS m WHERE m.segment = d.name), d.realtime,
                   d.definition ->> 'description', d.refreshed_at, d.refresh_ms
            FROM cdp.segment_definitions AS d ORDER BY d.position
            """
        ).map {
            let (name, members, realtime, description, refreshed, millis) = try $0.decode(
                (String, Int, Bool, String?, Date?, Int?).self)
            return Summary(
                name: name, members: members, realtime: realtime, description: description, refreshedAt: refreshed,
                refreshMilliseconds: millis)
        }
    }

    /// The compiled SQL of a segment in force: its view and its per-profile form.
    public func sql(_ name: String) async throws -> (view: String, perProfile: String) {
        try await client.withConnection { db in
            let definitions = try await Self.current(db)
            guard definitions[name] != nil else {
                throw ProfileError("no segment named '\(name)' (tributary segments list shows them)")
            }
            let (catalog, computed) = try await Self.context(db)
            let compiler = SegmentCompiler(definitions, catalog: catalog, computed: computed)
            return (try compiler.createView(name).sql, try compiler.perProfile(name, profiles: []).inlined().sql)
        }
    }

    /// Up to `limit` members now (read from the view, so current even before a refresh), as JSON objects: the view's
    /// columns plus the profile's traits; and how many members there are in all.
    public func preview(_ name: String, limit: Int) async throws -> (rows: [String], total: Int) {
        guard try await client.query("SELECT 1 FROM cdp.segment_definitions WHERE name = \(name)").first != nil else {
            throw ProfileError("no segment named '\(name)' (tributary segments list shows them)")
        }
        let view = try Segment.view(name)
        return try await client.withTransaction { tx in
            let total = try await tx.query("SELECT count(*) FROM \(unescaped: view)").first!.decode(Int.self)
            let rows = try await tx.query(
                """
                SELECT (to_jsonb(s) || jsonb_build_object('traits', coalesce(d.traits, '{}')))::text
                FROM (SELECT * FROM \(unescaped: view) LIMIT \(limit)) AS s
                LEFT JOIN cdp.profile_data AS d ON d.profile_id = s.profile_id
                """
            ).map { try $0.decode(String.self) }
            return (rows, total)
        }
    }
}
