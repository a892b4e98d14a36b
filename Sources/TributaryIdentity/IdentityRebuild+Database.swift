import Foundation
import Postgres
import TributaryModel
import TributaryRuntime

/// The rebuild's other way, for data whose graph would not fit the memory budget in this process: every step
/// set-based in PostgreSQL (working tables in the session's temporary space), only the connected components computed
/// here by union-find over integer ids (about 14 bytes per identifier). Gives exactly the graph the in-memory way
/// gives; slower (36.6 s against 16.5 s on the 1.1M-event benchmark).
extension IdentityRebuild {
    static let schema = "tributary_rebuild"

    func rebuildInDatabase(
        _ db: PostgresConnection, rules: IdentityRules, document: PostgresJSON, last: Int64, report: inout Report, log: PhaseLog
    ) async throws {
        try await db.script(
            """
            DROP SCHEMA IF EXISTS \(Self.schema) CASCADE;
            CREATE SCHEMA \(Self.schema);
            """)
        let s = Self.schema
        // Working tables live in this session's temporary space (temp_buffers, no WAL, no shared-buffer churn);
        // only the identifiers, written by several sessions, are in a shared unlogged table.
        let t = "pg_temp"

        // 1. Identifiers of every event up to `last`, extracted by `extractionConnections` sessions side by side
        //    (the per-event function runs in one backend per statement; PostgreSQL does not parallelize it).
        try await db.execute(
            "CREATE UNLOGGED TABLE \(unescaped: s).ids (seq bigint, ts timestamptz, kind text, value text, alias bool)")
        try await onExtractionSessions(through: last) { worker, from, through in
            // Both forms of each alias call's previousId too (via_alias); the alias rule keeps one below.
            try await worker.execute(
                """
                INSERT INTO \(unescaped: s).ids
                SELECT e.seq, e.timestamp, c.kind, c.value, c.via_alias
                FROM cdp.events AS e
                CROSS JOIN LATERAL cdp.event_identifiers(e.type, e.user_id, e.anonymous_id, e.previous_id, e.traits, e.context,
                                                         \(document)) AS c
                WHERE e.seq > \(from) AND e.seq <= \(through) AND c.problem IS NULL
                """)
        }
        try await db.execute("ANALYZE \(unescaped: s).ids")
        // The alias rule (as IdentityStore.resolveAliases applies it in real time): a previousId is an anonymous id when
        // that value was the anonymousId of this or an earlier event, else a user id; the other form goes.
        try await db.execute(
            """
            WITH first_anonymous AS (
                SELECT value, min(seq) AS first_seq FROM \(unescaped: s).ids
                WHERE NOT alias AND kind = 'anonymous_id'
                  AND value IN (SELECT value FROM \(unescaped: s).ids WHERE alias AND kind = 'anonymous_id')
                GROUP BY value
            ), anonymous AS (
                SELECT a.seq FROM \(unescaped: s).ids AS a JOIN first_anonymous AS f ON f.value = a.value AND f.first_seq <= a.seq
                WHERE a.alias AND a.kind = 'anonymous_id'
            )
            DELETE FROM \(unescaped: s).ids AS p
            WHERE p.alias AND p.kind = CASE WHEN p.seq IN (SELECT seq FROM anonymous) THEN 'user_id' ELSE 'anonymous_id' END
            """)
        log.phase("extract identifiers", rows: report.events)

        // 2. Nodes (with their rank for priority order), event-node links, edges, hubs.
        let priority = try Self.arrayLiteral(rules.priority)
        let rankSQL =
            "coalesce(array_position(\(priority)::text[], grouped.kind) - 1, CASE WHEN grouped.kind = 'anonymous_id' THEN \(rules.priority.count + 1) ELSE \(rules.priority.count) END)"
        try await db.script(
            """
            -- Nodes keep the ids they have in cdp.identity_nodes; new ones draw from its sequence. So edges are
            -- built in the final id space and the swap compares like with like.
            CREATE TABLE \(t).nodes AS
            SELECT coalesce(existing.node_id, nextval(pg_get_serial_sequence('cdp.identity_nodes', 'node_id'))) AS id,
                   grouped.kind, grouped.value, grouped.first_seq, grouped.first_seen, grouped.last_seen, false AS hub,
                   \(rankSQL) AS rank
            FROM (SELECT kind, value, min(seq) AS first_seq, min(ts) AS first_seen, max(ts) AS last_seen
                  FROM \(s).ids GROUP BY kind, value) AS grouped
            LEFT JOIN cdp.identity_nodes AS existing ON existing.kind = grouped.kind AND existing.value = grouped.value;
            ANALYZE \(t).nodes;
            CREATE TABLE \(t).links AS
            SELECT i.seq, n.id AS node FROM \(s).ids AS i JOIN \(t).nodes AS n USING (kind, value);
            DROP TABLE \(s).ids;
            ANALYZE \(t).links;
            """)
        log.phase("nodes and links", rows: try await db.query("SELECT count(*) FROM \(unescaped: t).links").scalar(Int.self))
        try await db.script(
            """
            CREATE TABLE \(t).edges AS
            SELECT x.node AS a, y.node AS b, min(x.seq) AS first_seq
            FROM \(t).links AS x JOIN \(t).links AS y ON y.seq = x.seq AND x.node < y.node
            GROUP BY x.node, y.node;
            ANALYZE \(t).edges;
            """)
        // Only a node with more than hubThreshold edges in all can have that many to one kind: count degrees on
        // integers first, then look at kinds for those few.
        try await db.execute(
            """
            UPDATE \(unescaped: t).nodes SET hub = true
            WHERE id IN (SELECT linked.node
                         FROM (SELECT a AS node, b AS other FROM \(unescaped: t).edges
                               UNION ALL SELECT b, a FROM \(unescaped: t).edges) AS linked
                         JOIN \(unescaped: t).nodes AS o ON o.id = linked.other
                         WHERE linked.node IN (SELECT node FROM (SELECT a AS node FROM \(unescaped: t).edges
                                                                 UNION ALL SELECT b FROM \(unescaped: t).edges) AS ends
                                               GROUP BY node HAVING count(*) > \(rules.hubThreshold))
                         GROUP BY linked.node, o.kind
                         HAVING count(*) > \(rules.hubThreshold))
              AND NOT (kind = ANY(\(rules.hubExemptKinds)::text[]))
            """)
        report.hubs = try await db.query("SELECT count(*) FROM \(unescaped: t).nodes WHERE hub").scalar(Int.self)
        report.identifiers = try await db.query("SELECT count(*) FROM \(unescaped: t).nodes").scalar(Int.self)
        report.edges = try await db.query("SELECT count(*) FROM \(unescaped: t).edges").scalar(Int.self)
        log.phase("edges and hubs", rows: report.edges)

        // 3. Components over edges between non-hub nodes, by union-find in this process over integer ids: the nodes
        //    and edges are streamed out with COPY, the labels (a component's smallest node id) and the components
        //    over a limit streamed back. A few bytes per node; edges are not kept.
        var components = try await Self.components(
            db, nodes: "COPY (SELECT id, kind FROM pg_temp.nodes WHERE NOT hub ORDER BY id) TO STDOUT",
            edges: "COPY pg_temp.edges (a, b) TO STDOUT", capacity: report.identifiers)
        let limits = components.kindNames.map { rules.limit(of: $0) }
        let overLimit = components.finder.overLimit { limits[Int($0)] }
        report.components = components.finder.count()
        try await db.execute("CREATE TABLE \(unescaped: t).labels (node bigint NOT NULL, label bigint NOT NULL)")
        try await Self.copyRows(db, "COPY \(unescaped: t).labels (node, label) FROM STDIN", 0..<components.finder.nodes.count) {
            position, line in
            Self.appendDecimal(components.finder.nodes[position], to: &line)
            line.append(0x09)
            Self.appendDecimal(components.finder.label(at: position), to: &line)
        }
        try await db.script(
            """
            ALTER TABLE \(t).labels ADD PRIMARY KEY (node);
            ANALYZE \(t).labels;
            CREATE TABLE \(t).conflicts (label bigint PRIMARY KEY);
            """)
        try await db.execute("INSERT INTO \(unescaped: t).conflicts SELECT unnest(\(overLimit.map { Int($0) })::int8[])")
        try await db.execute("ANALYZE \(unescaped: t).conflicts")
        log.phase("components (union-find)", rows: report.edges)

        // 4. One profile per component within limits; the rest replayed through the engine.
        try await db.script(
            """
            CREATE TABLE \(t).event_labels AS
            SELECT k.seq, min(l.label) AS label FROM \(t).links AS k JOIN \(t).labels AS l ON l.node = k.node GROUP BY k.seq;
            ANALYZE \(t).event_labels;
            """)
        log.phase("event labels", rows: report.events)
        try await db.script(
            """
            -- The identifiers of a component's earliest event are exactly its nodes first seen on that event, so
            -- the founder is the first of those in priority order.
            CREATE TABLE \(t).component_profiles AS
            SELECT label, kind, value, founded_seq, cdp.identity_profile_id(kind, value) AS profile_id
            FROM (SELECT DISTINCT ON (l.label) l.label, n.kind, n.value, n.first_seq AS founded_seq
                  FROM (SELECT l.label, min(n.first_seq) AS first_seq
                        FROM \(t).labels AS l JOIN \(t).nodes AS n ON n.id = l.node
                        WHERE l.label NOT IN (SELECT label FROM \(t).conflicts)
                        GROUP BY l.label) AS f
                  JOIN \(t).labels AS l ON l.label = f.label
                  JOIN \(t).nodes AS n ON n.id = l.node AND n.first_seq = f.first_seq
                  ORDER BY l.label, n.rank, n.kind COLLATE "C", n.value COLLATE "C") AS founders;
            ANALYZE \(t).component_profiles;
            CREATE TABLE \(t).replayed_nodes (node bigint PRIMARY KEY, profile_id uuid NOT NULL);
            CREATE TABLE \(t).replayed_profiles (profile_id uuid, kind text, value text, founded_seq bigint);
            CREATE TABLE \(t).replayed_events (seq bigint PRIMARY KEY, profile_id uuid);
            """)
        log.phase("founders", rows: report.components - overLimit.count)
        report.conflictComponents = overLimit.count
        if report.conflictComponents > 0 { try await replayConflicts(db, rules: rules) }
        try await db.script("ANALYZE \(t).replayed_nodes; ANALYZE \(t).replayed_profiles; ANALYZE \(t).replayed_events;")
        log.phase("components over a limit replayed", rows: report.conflictComponents)

        // Final state in Tributary's id space is computed inside the swap, against what is stored then.
        try await db.script(
            """
            CREATE TABLE \(t).final_nodes AS
            SELECT n.id, n.kind, n.value, n.first_seq, n.first_seen, n.last_seen, n.hub,
                   CASE WHEN n.hub THEN cdp.identity_profile_id(n.kind, n.value) ELSE coalesce(r.profile_id, c.profile_id) END AS profile_id
            FROM \(t).nodes AS n
            LEFT JOIN \(t).labels AS l ON l.node = n.id
            LEFT JOIN \(t).component_profiles AS c ON c.label = l.label
            LEFT JOIN \(t).replayed_nodes AS r ON r.node = n.id;
            CREATE TABLE \(t).final_profiles AS
            SELECT profile_id, kind, value, founded_seq FROM \(t).component_profiles
            UNION ALL SELECT profile_id, kind, value, founded_seq FROM \(t).replayed_profiles
            UNION ALL SELECT cdp.identity_profile_id(kind, value), kind, value, first_seq FROM \(t).nodes WHERE hub;
            ANALYZE \(t).final_profiles;
            CREATE TABLE \(t).final_events AS
            SELECT el.seq, coalesce(r.profile_id, c.profile_id) AS profile_id
            FROM \(t).event_labels AS el
            LEFT JOIN \(t).component_profiles AS c ON c.label = el.label
            LEFT JOIN \(t).replayed_events AS r ON r.seq = el.seq
            UNION ALL
            (SELECT DISTINCT ON (k.seq) k.seq, cdp.identity_profile_id(n.kind, n.value)
             FROM \(t).links AS k JOIN \(t).nodes AS n ON n.id = k.node AND n.hub
             WHERE k.seq NOT IN (SELECT seq FROM \(t).event_labels)
             ORDER BY k.seq, n.rank, n.kind COLLATE "C", n.value COLLATE "C");
            ALTER TABLE \(t).final_events ADD PRIMARY KEY (seq);
            ANALYZE \(t).final_nodes;
            ANALYZE \(t).final_events;
            """)
        report.profiles = try await db.query("SELECT count(*) FROM \(unescaped: t).final_profiles").scalar(Int.self)
        log.phase("final state", rows: report.profiles)

        // 5. Swap in, in one transaction, holding the real-time stage's lock.
        try await db.withTransaction { tx in
            try await tx.advisoryTransactionLock(IdentityStore.processorLock)
            // Fresh statistics first: after a truncate or a first run the planner would otherwise think these
            // tables empty and scan them once per row while they fill.
            try await tx.script(
                """
                ANALYZE cdp.identity_nodes;
                ANALYZE cdp.identity_edges;
                ANALYZE cdp.identity_profiles;
                CREATE TABLE \(t).old_profiles AS
                SELECT p.profile_id, p.founder_kind, p.founder_value FROM cdp.identity_profiles AS p
                WHERE NOT EXISTS (SELECT 1 FROM \(t).final_profiles AS f WHERE f.profile_id = p.profile_id);
                ANALYZE \(t).old_profiles;
                INSERT INTO cdp.profile_merge_log (from_profile_id, into_profile_id, reason, kind, value)
                SELECT o.profile_id, m.profile_id, 'rebuild', o.founder_kind, o.founder_value
                FROM \(t).old_profiles AS o JOIN \(t).final_nodes AS m ON m.kind = o.founder_kind AND m.value = o.founder_value
                WHERE m.profile_id <> o.profile_id;
                CREATE TABLE \(t).redirects_touched AS SELECT profile_id FROM \(t).old_profiles;
                INSERT INTO \(t).redirects_touched SELECT from_profile_id FROM cdp.profile_merge_log WHERE seq > \(last);
                DELETE FROM cdp.profile_merge_log WHERE seq > \(last);
                DELETE FROM cdp.identity_profiles WHERE profile_id IN (SELECT profile_id FROM \(t).old_profiles);
                UPDATE cdp.identity_profiles AS p
                SET founder_kind = f.kind, founder_value = f.value, founded_seq = f.founded_seq
                FROM \(t).final_profiles AS f
                WHERE p.profile_id = f.profile_id
                  AND (p.founder_kind, p.founder_value, p.founded_seq) IS DISTINCT FROM (f.kind, f.value, f.founded_seq);
                CREATE TABLE \(t).new_profiles AS
                SELECT f.profile_id, f.kind, f.value, f.founded_seq FROM \(t).final_profiles AS f
                WHERE NOT EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = f.profile_id);
                INSERT INTO cdp.identity_profiles (profile_id, founder_kind, founder_value, founded_seq)
                SELECT profile_id, kind, value, founded_seq FROM \(t).new_profiles;
                INSERT INTO \(t).redirects_touched SELECT profile_id FROM \(t).new_profiles;
                DELETE FROM cdp.identity_nodes AS n WHERE NOT EXISTS (SELECT 1 FROM \(t).final_nodes AS m WHERE m.id = n.node_id);
                """)
            // The merge log and the profiles are final: their redirects, then the stage cache's signal.
            try await IdentityStore.refreshRedirects(tx, touchedBy: "SELECT profile_id FROM \(unescaped: t).redirects_touched")
            try await IdentityStore.advanceGraphEpoch(tx)
            report.nodesChanged =
                try await tx.execute(
                    """
                    UPDATE cdp.identity_nodes AS n
                    SET profile_id = m.profile_id, status = CASE WHEN m.hub THEN 'hub' ELSE 'active' END, first_seq = m.first_seq,
                        first_seen_at = m.first_seen, last_seen_at = m.last_seen
                    FROM \(unescaped: t).final_nodes AS m
                    WHERE m.id = n.node_id
                      AND (n.profile_id, n.status, n.first_seq, n.first_seen_at, n.last_seen_at)
                          IS DISTINCT FROM (m.profile_id, CASE WHEN m.hub THEN 'hub' ELSE 'active' END, m.first_seq, m.first_seen, m.last_seen)
                    """) ?? 0
            try await tx.script(
                """
                CREATE TABLE \(t).new_nodes AS
                SELECT m.* FROM \(t).final_nodes AS m
                WHERE NOT EXISTS (SELECT 1 FROM cdp.identity_nodes AS n WHERE n.node_id = m.id);
                """)
            report.nodesChanged +=
                try await tx.execute(
                    """
                    INSERT INTO cdp.identity_nodes (node_id, kind, value, profile_id, status, first_seq, first_seen_at, last_seen_at)
                    SELECT m.id, m.kind, m.value, m.profile_id, CASE WHEN m.hub THEN 'hub' ELSE 'active' END, m.first_seq,
                           m.first_seen, m.last_seen
                    FROM \(unescaped: t).new_nodes AS m
                    """) ?? 0
            try await tx.script(
                """
                DELETE FROM cdp.identity_edges AS e
                WHERE NOT EXISTS (SELECT 1 FROM \(t).edges AS m WHERE m.a = e.a AND m.b = e.b);
                UPDATE cdp.identity_edges AS e SET first_seq = m.first_seq
                FROM \(t).edges AS m WHERE m.a = e.a AND m.b = e.b AND m.first_seq <> e.first_seq;
                CREATE TABLE \(t).new_edges AS
                SELECT m.a, m.b, m.first_seq FROM \(t).edges AS m
                WHERE NOT EXISTS (SELECT 1 FROM cdp.identity_edges AS e WHERE e.a = m.a AND e.b = m.b);
                INSERT INTO cdp.identity_edges (a, b, first_seq) SELECT a, b, first_seq FROM \(t).new_edges;
                """)
            try await tx.script(
                """
                CREATE TABLE \(t).restamp AS
                SELECT s.seq, s.timestamp, f.profile_id
                FROM cdp.events AS s LEFT JOIN \(t).final_events AS f ON f.seq = s.seq
                WHERE s.seq <= \(last) AND s.profile_id IS DISTINCT FROM f.profile_id;
                ANALYZE \(t).restamp;
                """)
            report.eventsRestamped =
                try await tx.execute(
                    """
                    UPDATE cdp.events AS e SET profile_id = d.profile_id
                    FROM \(unescaped: t).restamp AS d
                    WHERE e.seq = d.seq AND e.timestamp = d.timestamp
                    """) ?? 0
            try await Checkpoint.identity.set(tx, seq: last)
            // Stages after identity rebuild from events rather than replay this rebuild's changes one by one.
            try await Checkpoint.identity.advanceGeneration(tx)
        }
        log.phase("swap in")
        try await db.script("DROP SCHEMA \(Self.schema) CASCADE")
    }

    /// Replays the events of components that exceed a limit through the engine, in receive order, and stores the
    /// result in the rebuild's replayed_* tables.
    private func replayConflicts(_ db: PostgresConnection, rules: IdentityRules) async throws {
        let t = "pg_temp"
        let rows = try await db.query(
            """
            SELECT k.seq, n.id, n.kind, n.value
            FROM \(unescaped: t).event_labels AS el
            JOIN \(unescaped: t).links AS k ON k.seq = el.seq
            JOIN \(unescaped: t).nodes AS n ON n.id = k.node AND NOT n.hub
            WHERE el.label IN (SELECT label FROM \(unescaped: t).conflicts)
            ORDER BY k.seq
            """)
        var engine = IdentityEngine(rules: rules)
        var nodeIDs: [Identifier: Int64] = [:]
        var current: ExtractedEvent?
        func flush() {
            guard let event = current else { return }
            engine.process(IdentityStage.resolverEvent(event, rules: rules, isHub: { _ in false }))
        }
        for row in rows {
            let (seq, id, kind, value) = try row.decode((Int64, Int64, String, String).self)
            let identifier = Identifier(kind: kind, value: value)
            nodeIDs[identifier] = id
            if current?.seq != seq {
                flush()
                current = ExtractedEvent(seq: seq, messageID: "", micros: 0)
            }
            current!.identifiers.append(identifier)
        }
        flush()
        let nodes = nodeIDs.map { (Int($0.value), engine.profile(of: $0.key)!) }
        try await db.execute(
            """
            INSERT INTO \(unescaped: t).replayed_nodes SELECT * FROM unnest(\(nodes.map(\.0))::int8[], \(nodes.map(\.1))::uuid[])
            """)
        let alive = Array(engine.liveProfiles)
        let founders = alive.map { engine.profiles[$0]! }
        try await db.execute(
            """
            INSERT INTO \(unescaped: t).replayed_profiles
            SELECT * FROM unnest(\(alive)::uuid[], \(founders.map(\.founder.kind))::text[], \(founders.map(\.founder.value))::text[],
                                 \(founders.map { Int($0.foundedSeq) })::int8[])
            """)
        let stamps = engine.finalStamps
        try await db.execute(
            """
            INSERT INTO \(unescaped: t).replayed_events
            SELECT * FROM unnest(\(stamps.map { Int($0.seq) })::int8[], \(stamps.map(\.profile))::uuid[])
            """)
    }

}
