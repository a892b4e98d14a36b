/// How Tributary's tables are laid out on the database it runs on.
public enum DistributionMode: String, Sendable, CaseIterable {
    /// One PostgreSQL server: every table is an ordinary local table (the default).
    case single
    /// Citus (distributed PostgreSQL): tables are distributed, replicated as reference tables or kept on the
    /// coordinator as `DistributionPlan` says, with `create_distributed_table` / `create_reference_table`.
    case citus
    /// A stand-in for Citus on plain PostgreSQL, for tests: every table the plan distributes is hash-partitioned by
    /// its distribution column (four partitions), which makes PostgreSQL enforce Citus's key rule (every primary key
    /// and unique constraint includes the distribution column). It converts a freshly migrated database only.
    case standin

    /// The key of `cdp.settings` that records the mode a database was laid out in.
    public static let settingKey = "distribution"
}

/// Where one table of `cdp` lives in the distributed modes.
public struct TablePlacement: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Sharded by `column`; tables of one `colocation` group keep rows with equal column values on one node, so
        /// joins and transactions on that value stay on one shard.
        case distributed(column: String, colocation: String)
        /// Small, read everywhere, written rarely: a full copy on every node (Citus reference table).
        case reference
        /// Kept on the coordinator (Citus local table, joinable with the others): written by one process at a time
        /// or read only by operators.
        case local
    }

    /// The table's name in `cdp`.
    public let table: String
    public let kind: Kind
    /// Why it is placed so, for the README and for whoever adds the next table.
    public let why: String

    /// The distribution column, for distributed tables.
    public var column: String? {
        if case .distributed(let column, _) = kind { return column }
        return nil
    }
}

/// The placement of every table of `cdp` in the distributed modes (`tributary migrate --distribution citus`).
///
/// Events are sharded by `message_id`, which never changes and puts an event and its idempotency row on one shard
/// (the duplicate check at ingestion stays single-shard); a profile id is not stable (merges change it), so events
/// are not co-located with profiles. Everything keyed by profile shares one co-location group on `profile_id` (or the
/// old id, for the merge log and redirects). Identifiers are sharded by their value. Control-plane tables are reference
/// tables; logs that only one process writes and operators read stay on the coordinator.
///
/// A table missing from this list makes the distributed modes refuse to migrate, naming it; a test checks the list
/// against the catalog in every run. Tables listed in referenced-before-referencing order (foreign keys).
public enum DistributionPlan {
    static let profiles = "profiles"
    static let events = "events"
    static let identifiers = "identifiers"
    static let edges = "edges"
    static let syncKeys = "sync_keys"

    public static let placements: [TablePlacement] = [
        // Control plane: small, read by every stage and request.
        .init(table: "settings", kind: .reference, why: "installation settings, read everywhere"),
        .init(table: "schema_migrations", kind: .local, why: "written by migrate only"),
        .init(table: "sources", kind: .reference, why: "write keys, checked on every request"),
        .init(table: "webhook_mappings", kind: .reference, why: "per source, read on every webhook call"),
        .init(table: "api_tokens", kind: .reference, why: "checked on every profile API request"),
        .init(table: "identity_rules", kind: .reference, why: "one row, read by the identity stage"),
        .init(table: "profile_config", kind: .reference, why: "catalog and computed traits, two rows"),
        .init(table: "rfm_thresholds", kind: .reference, why: "one row"),
        .init(table: "generated_views", kind: .reference, why: "definitions of generated views"),
        .init(table: "segment_definitions", kind: .reference, why: "referenced by segment_members"),
        .init(table: "syncs", kind: .reference, why: "referenced by the sync state tables"),
        .init(table: "sync_realtime", kind: .reference, why: "one row per real-time sync"),
        .init(table: "privacy_requests", kind: .reference, why: "referenced by suppressions"),
        .init(table: "suppressions", kind: .reference, why: "checked at ingestion, written by privacy requests"),
        .init(table: "prediction_fits", kind: .reference, why: "referenced by profile_predictions"),
        .init(table: "propensity_models", kind: .reference, why: "referenced by profile_propensities"),
        .init(table: "popular_products", kind: .reference, why: "a short ranked list"),
        // Written by one stage or process at a time, read by operators.
        .init(table: "stage_checkpoints", kind: .local, why: "one row per stage"),
        .init(table: "identity_ignored", kind: .local, why: "counters per reason and kind"),
        .init(table: "event_counts", kind: .local, why: "per source and minute, for the console"),
        .init(table: "sync_runs", kind: .local, why: "one row per sync run"),
        .init(table: "audit_log", kind: .local, why: "operator actions"),
        // Events: by message id (stable; the idempotency row on the same shard).
        .init(table: "events", kind: .distributed(column: "message_id", colocation: events), why: "the event store"),
        .init(
            table: "event_message_ids", kind: .distributed(column: "message_id", colocation: events),
            why: "idempotency, next to the event"),
        // Identity graph: by identifier value; edges by their first node.
        .init(
            table: "identity_nodes", kind: .distributed(column: "value", colocation: identifiers),
            why: "one row per identifier"),
        .init(table: "identity_edges", kind: .distributed(column: "a", colocation: edges), why: "pairs of node ids"),
        // Everything keyed by profile, co-located.
        .init(
            table: "identity_profiles", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "live profiles"),
        .init(
            table: "profile_merge_log", kind: .distributed(column: "from_profile_id", colocation: profiles),
            why: "merges, by the profile that went away"),
        .init(
            table: "profile_redirects", kind: .distributed(column: "from_profile_id", colocation: profiles),
            why: "old id to live id, one lookup"),
        .init(
            table: "profile_data", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "traits and aggregates"),
        .init(
            table: "profile_trait_values", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "trait values with their provenance"),
        .init(
            table: "profile_changes", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "the profile change feed"),
        .init(
            table: "trait_history", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "trait changes"),
        .init(
            table: "profile_consent", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "consent per purpose"),
        .init(
            table: "consent_changes", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "consent history"),
        .init(
            table: "profile_predictions", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "predictive traits"),
        .init(
            table: "profile_propensities", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "propensity scores"),
        .init(
            table: "profile_recommendation_lists", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "recommendations"),
        .init(
            table: "segment_members", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "audience membership"),
        .init(
            table: "segment_changes", kind: .distributed(column: "profile_id", colocation: profiles),
            why: "audience entries and exits"),
        // Sync state: by the destination key.
        .init(
            table: "sync_state", kind: .distributed(column: "key", colocation: syncKeys),
            why: "what each destination holds"),
        .init(
            table: "sync_pending", kind: .distributed(column: "key", colocation: syncKeys),
            why: "rows a run is delivering"),
        .init(
            table: "sync_errors", kind: .distributed(column: "key", colocation: syncKeys), why: "rows that failed"),
        .init(
            table: "sync_run_rows", kind: .distributed(column: "key", colocation: syncKeys),
            why: "what each run did per row"),
    ]

    /// The placement of `table` (a name in `cdp`), if the plan has one.
    public static func placement(of table: String) -> TablePlacement? {
        placements.first { $0.table == table }
    }

    /// The tables the plan distributes, as `cdp.name`, with their distribution columns.
    public static var distributedColumns: [String: String] {
        var result: [String: String] = [:]
        for placement in placements {
            if let column = placement.column { result["cdp.\(placement.table)"] = column }
        }
        return result
    }
}
