import Foundation
import Logging
import Postgres
import TributaryModel

/// Lays a migrated database out as `DistributionPlan` says: on Citus with `create_distributed_table` and
/// `create_reference_table`, or, for tests, with the hash-partitioned stand-in. Idempotent: tables already placed are
/// left alone, so it runs after every migration (new tables of a new version are placed then).
///
/// First, in both modes, every primary key and unique constraint of a distributed table that lacks the distribution
/// column gets it appended (`identity_nodes (node_id)` becomes `(node_id, value)`): Citus refuses the table
/// otherwise, and the key stays as selective as before.
public struct Distributor: Sendable {
    let files: ProjectFiles
    let logger: Logger

    public init(files: ProjectFiles, logger: Logger) {
        self.files = files
        self.logger = logger
    }

    /// The mode recorded in the database, if it was ever laid out for one.
    public static func storedMode(_ connection: PostgresConnection) async throws -> DistributionMode? {
        guard try await connection.query("SELECT to_regclass('cdp.settings') IS NOT NULL").scalar(Bool.self) else {
            return nil
        }
        let stored = try await connection.query(
            "SELECT value #>> '{}' FROM cdp.settings WHERE key = \(DistributionMode.settingKey)"
        ).first.map { try $0[0].decode(String.self) }
        return stored.flatMap(DistributionMode.init(rawValue:))
    }

    /// Whether the `citus` extension is installed in this database.
    public static func citusInstalled(_ connection: PostgresConnection) async throws -> Bool {
        try await connection.query("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')").scalar(Bool.self)
    }

    /// The mode to migrate in: the one asked for, else the one recorded, else Citus if the extension is there.
    /// Refuses to change the mode of a database that was laid out in another.
    public static func resolve(
        requested: DistributionMode?, on connection: PostgresConnection
    ) async throws -> DistributionMode {
        let stored = try await storedMode(connection)
        if let requested {
            if let stored, stored != requested {
                throw MigrationError(
                    "this database is laid out for --distribution \(stored.rawValue), not \(requested.rawValue); "
                        + "the layout of a database is chosen once (migrate a new database to change it)")
            }
            if requested == .citus, !(try await citusInstalled(connection)) {
                throw MigrationError(
                    "--distribution citus needs the citus extension in this database (CREATE EXTENSION citus), and it "
                        + "is not installed")
            }
            return requested
        }
        if let stored { return stored }
        return try await citusInstalled(connection) ? .citus : .single
    }

    /// What `apply` changed: one line per table.
    public struct Report: Sendable {
        public var changes: [String] = []
    }

    /// Places every table of `cdp` for `mode` (nothing for `.single`).
    @discardableResult
    public func apply(_ mode: DistributionMode, on connection: PostgresConnection) async throws -> Report {
        switch mode {
        case .single:
            return Report()
        case .standin:
            // All or nothing: a refused table leaves the database as it was.
            return try await connection.withTransaction { try await layOut(mode, on: $0) }
        case .citus:
            // Citus's table functions commit their own work; each step stands alone and a re-run resumes.
            return try await layOut(mode, on: connection)
        }
    }

    private func layOut(_ mode: DistributionMode, on connection: PostgresConnection) async throws -> Report {
        var report = Report()
        try await checkCoverage(connection)
        if try await Self.storedMode(connection) == nil {
            try await connection.execute(
                """
                INSERT INTO cdp.settings (key, value) VALUES (\(DistributionMode.settingKey), to_jsonb(\(mode.rawValue)::text))
                ON CONFLICT (key) DO NOTHING
                """)
        }
        for placement in DistributionPlan.placements {
            guard let column = placement.column else { continue }
            report.changes += try await includeColumnInKeys(placement.table, column: column, on: connection)
        }
        // Citus fires triggers on each shard, on the workers: the graph epoch's statement trigger goes, and the
        // writers other than the identity stage advance the epoch themselves (IdentityStore.advanceGraphEpoch).
        let trigger = try await connection.query(
            "SELECT EXISTS (SELECT FROM pg_trigger WHERE tgname = 'identity_nodes_changed' AND tgrelid = 'cdp.identity_nodes'::regclass)"
        ).scalar(Bool.self)
        if trigger {
            try await connection.execute("DROP TRIGGER identity_nodes_changed ON cdp.identity_nodes")
            report.changes.append("cdp.identity_nodes: trigger identity_nodes_changed dropped")
        }
        switch mode {
        case .single:
            break
        case .standin:
            report.changes += try await standIn(connection)
        case .citus:
            report.changes += try await citus(connection)
        }
        for change in report.changes { logger.info("distribution", metadata: ["change": "\(change)"]) }
        return report
    }

    /// Every table of `cdp` has a placement, and every placement a table.
    private func checkCoverage(_ connection: PostgresConnection) async throws {
        let tables = Set(
            try await connection.query(
                """
                SELECT c.relname FROM pg_class AS c
                WHERE c.relnamespace = 'cdp'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                """
            ).map { try $0[0].decode(String.self) })
        let planned = Set(DistributionPlan.placements.map(\.table))
        if let missing = tables.subtracting(planned).sorted().first {
            throw MigrationError(
                "table cdp.\(missing) has no placement in DistributionPlan (Sources/TributaryService/DistributionPlan.swift); "
                    + "say whether it is distributed (by which column), a reference table or local")
        }
        if let gone = planned.subtracting(tables).sorted().first {
            throw MigrationError("DistributionPlan places cdp.\(gone), which the migrations do not create")
        }
    }

    /// Appends the distribution column to each primary key and unique constraint of `table` that lacks it.
    private func includeColumnInKeys(
        _ table: String, column: String, on connection: PostgresConnection
    ) async throws -> [String] {
        let constraints = try await connection.query(
            """
            SELECT con.conname, con.contype::text,
                   array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k (attnum, position)
                         JOIN pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.position)
            FROM pg_constraint AS con
            WHERE con.conrelid = ('cdp.' || quote_ident(\(table)))::regclass AND con.contype IN ('p', 'u')
            ORDER BY con.conname
            """
        ).map { try $0.decode((String, String, [String]).self) }
        var changes: [String] = []
        for (name, type, columns) in constraints where !columns.contains(column) {
            let keyword: PostgresQuery = type == "p" ? "PRIMARY KEY" : "UNIQUE"
            let list = PostgresQuery.joined((columns + [column]).map { "\(identifier: $0)" })
            try await connection.execute(
                """
                ALTER TABLE cdp.\(identifier: table) DROP CONSTRAINT \(identifier: name),
                    ADD CONSTRAINT \(identifier: name) \(keyword) (\(list))
                """)
            changes.append("cdp.\(table): \(name) is now (\((columns + [column]).joined(separator: ", ")))")
        }
        return changes
    }

    private func standIn(_ connection: PostgresConnection) async throws -> [String] {
        let script = files.sqlDirectory.appendingPathComponent("distributed/standin.sql")
        try await connection.script(try Migration.readText(script))
        var changes: [String] = []
        // Monthly partitions of cdp.events made before the stand-in: empty ones go (the sql/ step makes them again,
        // hash-partitioned by message_id); one holding events cannot be converted.
        let plain = try await connection.query(
            """
            SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'cdp.events'::regclass AND c.relkind = 'r'
            ORDER BY 1
            """
        ).map { try $0[0].decode(String.self) }
        for partition in plain {
            let rows = try await connection.query("SELECT EXISTS (SELECT FROM cdp.\(identifier: partition))")
            if try rows.scalar(Bool.self) {
                throw MigrationError(
                    "the distribution stand-in converts empty tables only, and cdp.\(partition) has events; "
                        + "use the stand-in on a freshly created database")
            }
            try await connection.execute("DROP TABLE cdp.\(identifier: partition)")
            changes.append("cdp.\(partition): dropped, to be made again hash-partitioned")
        }
        for placement in DistributionPlan.placements where placement.table != "events" {
            guard let column = placement.column else { continue }
            let partitioned = try await connection.query(
                "SELECT relkind = 'p' FROM pg_class WHERE oid = ('cdp.' || quote_ident(\(placement.table)))::regclass"
            ).scalar(Bool.self)
            if partitioned { continue }
            try await connection.execute(
                "SELECT cdp.standin_distribute(('cdp.' || quote_ident(\(placement.table)))::regclass, \(column))")
            changes.append("cdp.\(placement.table): hash-partitioned by \(column)")
        }
        return changes
    }

    private func citus(_ connection: PostgresConnection) async throws -> [String] {
        let coordinator = try await connection.query("SELECT EXISTS (SELECT FROM pg_dist_node WHERE groupid = 0)")
        guard try coordinator.scalar(Bool.self) else {
            throw MigrationError(
                "the Citus coordinator is not in its own metadata, which the coordinator-local tables need; run "
                    + "SELECT citus_set_coordinator_host('<this host>', <port>) and migrate again")
        }
        // pg_dist_partition: 'h' hash-distributed; 'n' with repmodel 't' a reference table, else a Citus local table.
        func current(_ table: String) async throws -> TablePlacement.Kind? {
            let row = try await connection.query(
                """
                SELECT partmethod::text, repmodel::text FROM pg_dist_partition
                WHERE logicalrelid = ('cdp.' || quote_ident(\(table)))::regclass
                """
            ).first
            guard let (method, model) = try row?.decode((String, String).self) else { return nil }
            if method == "h" { return .distributed(column: "", colocation: "") }
            return model == "t" ? .reference : .local
        }
        var changes: [String] = []
        var groupLeaders: [String: String] = [:]
        // Reference and local tables first: distributed tables keep foreign keys to reference tables only.
        let ordered =
            DistributionPlan.placements.filter { $0.column == nil } + DistributionPlan.placements.filter { $0.column != nil }
        for placement in ordered {
            let name = "cdp.\(placement.table)"
            let now = try await current(placement.table)
            switch placement.kind {
            case .reference:
                if now == .reference { continue }
                try await connection.execute("SELECT create_reference_table(\(name)::regclass)")
                changes.append("\(name): reference table")
            case .local:
                if now != nil { continue }
                try await connection.execute("SELECT citus_add_local_table_to_metadata(\(name)::regclass)")
                changes.append("\(name): local table on the coordinator")
            case .distributed(let column, let colocation):
                let leader = groupLeaders[colocation]
                if groupLeaders[colocation] == nil { groupLeaders[colocation] = name }
                if case .distributed? = now { continue }
                try await connection.execute(
                    """
                    SELECT create_distributed_table(\(name)::regclass, \(column), colocate_with => \(leader ?? "none"))
                    """)
                changes.append("\(name): distributed by \(column)")
            }
        }
        return changes
    }
}
