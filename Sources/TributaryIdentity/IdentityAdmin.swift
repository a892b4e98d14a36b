import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryModel
import TributaryRuntime

/// Rules, status and explanations of the identity graph: what the `tributary identity` commands call.
public struct IdentityAdmin: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// What applying rules did.
    public enum ApplyOutcome: Sendable {
        case unchanged
        /// Only blocked patterns were added: the values they now block were removed and what they joined split.
        case blockedValuesSplit(identifiers: Int)
        /// Stored; the graph was not re-resolved (no events yet, or the caller asked not to).
        case stored
        /// Other rules changed: the whole graph was rebuilt.
        case rebuilt(IdentityRebuild.Report)
    }

    /// The rules in force.
    public func rules() async throws -> IdentityRules {
        try await client.withConnection { try await IdentityStore.rules($0).0 }
    }

    /// Validates and stores `rules`, then brings the graph in line with them: newly blocked values are removed and
    /// the profiles they joined split; any other change rebuilds the graph (when `resolve` is true).
    @discardableResult
    public func apply(rules: IdentityRules, resolve: Bool = true) async throws -> ApplyOutcome {
        try rules.validate()
        let document = try rules.document()
        let checksum = try rules.checksum()
        let outcome: ApplyOutcome = try await client.withConnection { db in
            // Each pattern must compile in PostgreSQL, which is what evaluates them.
            for (index, entry) in rules.allBlocked.enumerated() {
                do {
                    _ = try await db.query("SELECT '' ~* \(entry.pattern)")
                } catch let error as PostgresError {
                    let position = index - (rules.defaultBlocked ? IdentityRules.builtInBlocked.count : 0)
                    throw IdentityError(
                        "rules.blocked[\(position)]: '\(entry.pattern)' is not a valid regular expression: \(error.message)")
                }
            }
            return try await db.withTransaction { tx in
                try await tx.advisoryTransactionLock(IdentityStore.processorLock)
                let (old, _) = try await IdentityStore.rules(tx)
                let stored = try await tx.query("SELECT checksum FROM cdp.identity_rules WHERE id = 1").first.map {
                    try $0[0].decode(String.self)
                }
                if stored == checksum { return .unchanged }
                try await tx.execute(
                    """
                    INSERT INTO cdp.identity_rules (id, rules, checksum) VALUES (1, \(document), \(checksum))
                    ON CONFLICT (id) DO UPDATE SET rules = excluded.rules, checksum = excluded.checksum, applied_at = excluded.applied_at
                    """)
                let hasGraph = try await tx.query("SELECT EXISTS (SELECT 1 FROM cdp.identity_nodes)").scalar(Bool.self)
                guard resolve, hasGraph else { return .stored }
                var onlyAdded = old
                onlyAdded.blocked = rules.blocked
                if onlyAdded == rules, Set(old.blocked.map(\.pattern)).isSubset(of: rules.blocked.map(\.pattern)) {
                    let blocked = try await tx.query(
                        """
                        SELECT node_id FROM cdp.identity_nodes
                        WHERE value ~* coalesce(\(document)::jsonb -> 'blockedRegex' ->> kind, \(document)::jsonb -> 'blockedRegex' ->> '*')
                        """
                    ).map { try $0[0].decode(Int64.self) }
                    try await IdentitySplits.split(
                        tx, rules: rules, document: document, hubs: [], blocked: blocked,
                        through: try await Checkpoint.identity.seq(tx), logger: logger)
                    return .blockedValuesSplit(identifiers: blocked.count)
                }
                return .rebuilt(IdentityRebuild.Report())
            }
        }
        if case .rebuilt = outcome {
            return .rebuilt(try await IdentityRebuild(configuration: client.configuration, logger: logger).run())
        }
        return outcome
    }

    /// Brings the stored rules up to this version's built-in ones (``IdentityRules/builtInBlocked`` grows as new
    /// placeholder values are found): the stored document is re-stored when its checksum no longer matches, and values
    /// that the new built-in patterns refuse are removed from the graph and what they had joined is split — the same
    /// as applying a file that only adds blocked patterns. Run by `tributary migrate`; nothing happens when the
    /// stored rules are current.
    @discardableResult
    public func upgradeStoredRules() async throws -> ApplyOutcome {
        // Every migrate calls this: when the stored checksum is this version's, nothing is validated or locked.
        let (rules, stored) = try await client.withConnection { db in
            (
                try await IdentityStore.rules(db).0,
                try await db.query("SELECT checksum FROM cdp.identity_rules WHERE id = 1").first.map {
                    try $0[0].decode(String.self)
                }
            )
        }
        if stored == (try rules.checksum()) { return .unchanged }
        return try await apply(rules: rules)
    }

    /// Where the stage is and what the graph holds.
    public struct Status: Sendable {
        public var checkpoint: Int64
        public var lastEvent: Int64
        public var identifiers: Int
        public var profiles: Int
        public var hubs: Int
        public var merges: Int
        public var ignored: [(reason: String, kind: String, count: Int)]
        public var lag: Int64 { max(0, lastEvent - checkpoint) }
    }

    public func status() async throws -> Status {
        let row = try await client.query(
            """
            SELECT \(Checkpoint.identity.seqSQL),
                   coalesce((SELECT max(seq) FROM cdp.events), 0),
                   (SELECT count(*) FROM cdp.identity_nodes),
                   (SELECT count(*) FROM cdp.identity_profiles),
                   (SELECT count(*) FROM cdp.identity_nodes WHERE status = 'hub'),
                   (SELECT count(*) FROM cdp.profile_merge_log)
            """)[0]
        let (checkpoint, last, identifiers, profiles, hubs, merges) = try row.decode((Int64, Int64, Int, Int, Int, Int).self)
        let ignored = try await client.query(
            "SELECT reason, kind, count FROM cdp.identity_ignored ORDER BY count DESC, reason, kind"
        )
        .map { try $0.decode((String, String, Int).self) }
        return Status(
            checkpoint: checkpoint, lastEvent: last, identifiers: identifiers, profiles: profiles, hubs: hubs,
            merges: merges, ignored: ignored.map { (reason: $0.0, kind: $0.1, count: $0.2) })
    }

    /// An email or phone with the shape of a placeholder typed by strangers (a row of `cdp.identity_junk_suspects`).
    public struct JunkSuspect: Sendable, Equatable {
        public var identifier: Identifier
        public var profile: UUID
        /// How many anonymous ids it links (its only links, and they share nothing else).
        public var anonymousIDs: Int
        public var firstSeen: Date
        public var lastSeen: Date
    }

    /// Emails and phones linked only to two or more anonymous ids that share nothing else, most-linked first (then by
    /// kind and value). Advisory: a placeholder typed by strangers has this shape, and so does a person who typed
    /// their email on several browsers without signing in; nothing is refused until a value is put in `rules.blocked`.
    /// - Parameters:
    ///   - profile: only those held by this profile (nil: all).
    ///   - limit: at most this many (nil: all).
    public func junkSuspects(profile: UUID? = nil, limit: Int? = nil) async throws -> [JunkSuspect] {
        // A NULL profile filters nothing, and LIMIT NULL is no limit.
        try await client.query(
            """
            SELECT kind, value, profile_id, anonymous_ids, first_seen_at, last_seen_at FROM cdp.identity_junk_suspects
            WHERE profile_id = \(profile)::uuid OR \(profile)::uuid IS NULL
            ORDER BY anonymous_ids DESC, kind, value LIMIT \(limit)::int8
            """
        ).map { row in
            let (kind, value, profile, count, first, last) = try row.decode((String, String, UUID, Int, Date, Date).self)
            return JunkSuspect(
                identifier: Identifier(kind: kind, value: value), profile: profile, anonymousIDs: count, firstSeen: first,
                lastSeen: last)
        }
    }

    /// Which blocked pattern refuses `identifier` (normalized), described for a person: built-in or from the rules
    /// file, with its position there.
    func blockingPattern(_ identifier: Identifier, rules: IdentityRules) async throws -> String? {
        let builtIn = rules.defaultBlocked ? IdentityRules.builtInBlocked.count : 0
        for (index, entry) in rules.allBlocked.enumerated() where entry.kinds?.contains(identifier.kind) ?? true {
            guard try await client.query("SELECT \(identifier.value) ~* \(entry.pattern)").scalar(Bool.self) else { continue }
            return index < builtIn
                ? "built-in pattern '\(entry.pattern)' (see \"defaultBlocked\" in the rules)"
                : "pattern rules.blocked[\(index - builtIn)] '\(entry.pattern)'"
        }
        return nil
    }

    /// A readable account of the profile holding `identifier`: its identifiers, the events that joined them, the
    /// merges and splits it went through, and identifiers seen with it that were not merged (and why).
    public func explain(_ identifier: Identifier) async throws -> String {
        let (rules, document) = try await client.withConnection { try await IdentityStore.rules($0) }
        let normalized = try await client.query(
            """
            SELECT value, problem FROM cdp.identity_candidates(
                CASE WHEN \(identifier.kind) = 'user_id' THEN \(identifier.value) END,
                CASE WHEN \(identifier.kind) = 'anonymous_id' THEN \(identifier.value) END,
                jsonb_build_object(\(identifier.kind)::text, \(identifier.value)::text), '{}'::jsonb, \(document))
            WHERE kind = \(identifier.kind)
            """
        ).first.map { try $0.decode((String?, String?).self) }
        let value = normalized?.0 ?? identifier.value
        let target = Identifier(kind: identifier.kind, value: value)
        guard
            let node = try await client.query(
                """
                SELECT node_id, profile_id, status FROM cdp.identity_nodes WHERE kind = \(target.kind) AND value = \(target.value)
                """
            ).first.map({ try $0.decode((Int64, UUID, String).self) })
        else {
            var message = "no identifier \(target) is known"
            if let problem = normalized?.1 {
                message += " (it would be ignored: \(problem.replacingOccurrences(of: "_", with: " "))"
                if problem == "blocked", let pattern = try await blockingPattern(target, rules: rules) {
                    message += " by the \(pattern)"
                }
                message += ")"
            }
            throw IdentityError(message)
        }
        let profile = node.1
        var out = "\(target)\(target.value != identifier.value ? " (normalized from '\(identifier.value)')" : "")\n"
        if node.2 == "hub" {
            out += "  a hub: seen with more than \(rules.hubThreshold) distinct identifiers of one kind, so it merges nothing\n"
        }
        let founder = try await client.query(
            """
            SELECT p.founder_kind, p.founder_value, p.founded_seq, e.message_id, e.timestamp
            FROM cdp.identity_profiles AS p LEFT JOIN cdp.events AS e ON e.seq = p.founded_seq
            WHERE p.profile_id = \(profile)
            """
        ).first.map { try $0.decode((String, String, Int64, String?, Date?).self) }
        out += "\nprofile \(profile.uuidString.lowercased())"
        if let founder {
            out += "\n  founded by \(founder.0):\(founder.1) on event seq \(founder.2)"
            if let message = founder.3 { out += " (message \(message), \(PostgresTime.format(founder.4!)))" }
        }
        let identifiers = try await client.query(
            """
            SELECT node_id, kind, value, first_seen_at, last_seen_at FROM cdp.identity_nodes
            WHERE profile_id = \(profile) ORDER BY first_seq, node_id
            """
        ).map { try $0.decode((Int64, String, String, Date, Date).self) }
        out += "\n\nidentifiers (\(identifiers.count)):\n"
        for (_, kind, value, first, last) in identifiers {
            out += "  \(kind):\(value)  first seen \(PostgresTime.format(first)), last seen \(PostgresTime.format(last))\n"
        }
        // The chain: edges between this profile's identifiers in the order events made them, keeping those that
        // joined two groups not yet connected (a spanning forest, Kruskal-style).
        var parent: [Int64: Int64] = [:]
        func root(_ x: Int64) -> Int64 {
            var x = x
            while let p = parent[x], p != x { x = p }
            return x
        }
        let names = Dictionary(uniqueKeysWithValues: identifiers.map { ($0.0, "\($0.1):\($0.2)") })
        let edges = try await client.query(
            """
            SELECT e.a, e.b, e.first_seq, ev.message_id, ev.type, ev.timestamp
            FROM cdp.identity_edges AS e
            JOIN cdp.identity_nodes AS x ON x.node_id = e.a AND x.profile_id = \(profile)
            JOIN cdp.identity_nodes AS y ON y.node_id = e.b AND y.profile_id = \(profile)
            LEFT JOIN cdp.events AS ev ON ev.seq = e.first_seq
            ORDER BY e.first_seq, e.a, e.b
            LIMIT 10000
            """
        ).map { try $0.decode((Int64, Int64, Int64, String?, String?, Date?).self) }
        out += "\nhow they were joined (the event that first linked each pair):\n"
        var chain = 0
        for (a, b, seq, message, type, time) in edges where root(a) != root(b) {
            parent[root(a)] = root(b)
            chain += 1
            // An alias call joins its previousId to its userId (the alias rule of the identity stage).
            let call = type == "alias" ? "alias (previousId is userId)" : type ?? "?"
            out +=
                "  seq \(seq) \(call) \(message.map { "message \($0)" } ?? "") \(time.map(PostgresTime.format) ?? ""): \(names[a] ?? "?") + \(names[b] ?? "?")\n"
        }
        if chain == 0 { out += "  (a single identifier)\n" }
        let merges = try await client.query(
            """
            SELECT m.from_profile_id, m.into_profile_id, m.merged_at, m.reason, m.kind, m.value, m.event_seq, m.message_id, ev.type
            FROM cdp.profile_merges AS m LEFT JOIN cdp.events AS ev ON ev.seq = m.event_seq
            WHERE m.into_profile_id = \(profile) OR m.from_profile_id = \(profile)
            ORDER BY m.merged_at, m.event_seq NULLS LAST LIMIT 1000
            """
        ).map { try $0.decode((UUID, UUID, Date, String, String?, String?, Int64?, String?, String?).self) }
        if !merges.isEmpty {
            out += "\nmerges and splits:\n"
            for (from, into, at, reason, kind, value, seq, message, type) in merges {
                let direction =
                    into == profile
                    ? "profile \(from.uuidString.lowercased()) merged in"
                    : "this id was folded into \(into.uuidString.lowercased())"
                let cause = kind.map { "\($0):\(value ?? "")" } ?? ""
                let call = type == "alias" ? "alias call" : "event"
                let event = seq.map { " by \(call) seq \($0)\(message.map { " (message \($0))" } ?? "")" } ?? ""
                out +=
                    "  \(PostgresTime.format(at)) \(reason): \(direction)\(event)\(cause.isEmpty ? "" : ", through \(cause)")\n"
            }
        }
        let suspects = try await junkSuspects(profile: profile)
        if !suspects.isEmpty {
            out +=
                "\njunk suspects (linked only to anonymous ids that share nothing else: a placeholder typed by strangers looks like this, and so does a person who never signed in; if it is a placeholder, add it to rules.blocked):\n"
            for suspect in suspects { out += "  \(suspect.identifier) joins \(suspect.anonymousIDs) anonymous ids\n" }
        }
        let outside = try await client.query(
            """
            SELECT y.kind, y.value, y.status, y.profile_id, e.first_seq
            FROM cdp.identity_nodes AS x
            JOIN LATERAL cdp.identity_links(x.node_id) AS e ON true
            JOIN cdp.identity_nodes AS y ON y.node_id = e.other AND y.profile_id <> \(profile)
            WHERE x.profile_id = \(profile)
            ORDER BY e.first_seq LIMIT 50
            """
        ).map { try $0.decode((String, String, String, UUID, Int64).self) }
        if !outside.isEmpty {
            out += "\nseen with it but not merged:\n"
            for (kind, value, status, other, seq) in outside {
                let why =
                    status == "hub"
                    ? "a hub"
                    : "would exceed a limit (\(kind) at most \(rules.limit(of: kind)) per profile, or a limit of the other profile); in profile \(other.uuidString.lowercased())"
                out += "  \(kind):\(value) on event seq \(seq): \(why)\n"
            }
        }
        return out
    }
}
