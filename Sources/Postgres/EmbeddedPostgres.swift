import Foundation
import Logging

/// A PostgreSQL server that Tributary creates, starts and stops itself, for when no server is configured.
///
/// The cluster lives in a data directory (by default `.tributary/pgdata` under the current directory), listens
/// only on a Unix socket in a private directory beside it (no TCP port), and keeps running between commands until
/// ``stop()``. Run as root, the server runs as the `postgres` user, since PostgreSQL refuses to run as root.
///
/// ```swift
/// let server = EmbeddedPostgres(dataDirectory: EmbeddedPostgres.defaultDataDirectory(), logger: logger)
/// let configuration = try await server.start()   // initdb on first use, then pg_ctl start; reused later
/// ```
public struct EmbeddedPostgres: Sendable {
    /// The cluster's data directory as asked for.
    public let requestedDataDirectory: String
    /// The database Tributary uses in the cluster; created on first start.
    public let database: String
    /// The superuser `initdb` creates.
    public let user = "tributary"
    public let port = 5432
    /// Server settings written to the cluster's `tributary.conf` on every start, after Tributary's own (for example
    /// `shared_preload_libraries` for a test that reads `pg_stat_statements`).
    public var settings: [String: String] = [:]
    let logger: Logger

    public init(dataDirectory: String, database: String = "tributary", logger: Logger) {
        requestedDataDirectory = URL(fileURLWithPath: dataDirectory).standardizedFileURL.path
        self.database = database
        self.logger = logger
    }

    /// `TRIBUTARY_PGDATA` if set, else `.tributary/pgdata` under the current directory.
    public static func defaultDataDirectory(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String {
        if let path = environment["TRIBUTARY_PGDATA"], !path.isEmpty { return path }
        return FileManager.default.currentDirectoryPath + "/.tributary/pgdata"
    }

    // MARK: - Layout

    /// Where the files are, after accounting for the server user's access.
    public struct Layout: Sendable {
        public var dataDirectory: String
        /// The directory of the server's Unix socket (private to the server's user).
        public var socketDirectory: String
        public var logFile: String
        var lockFile: String
        /// The account the server runs as when Tributary runs as root.
        var serverUser: String?
    }

    /// Works out the layout. As root, if the `postgres` user cannot reach the requested directory (for example
    /// a checkout under `/root`), the cluster goes to `/var/tmp/tributary-<hash>/pgdata` instead, the same
    /// place every time for the same requested directory.
    public func layout() throws -> Layout {
        let serverUser: String? = getuid() == 0 ? "postgres" : nil
        if let serverUser, getpwnam(serverUser) == nil {
            throw PostgresError(
                .embeddedServer,
                "running as root, Tributary runs PostgreSQL as the '\(serverUser)' user, and there is no such user",
                hint: "create it (useradd --system --home /var/lib/postgresql postgres), run as a non-root user, "
                    + "or set DATABASE_URL to an existing server")
        }
        var data = requestedDataDirectory
        if let serverUser, !Self.userCanReach(serverUser, parentOf: data) {
            data = "/var/tmp/tributary-\(Self.shortHash(data))/pgdata"
        }
        let base = (data as NSString).deletingLastPathComponent
        let name = (data as NSString).lastPathComponent
        var socket = "\(base)/\(name).run"
        if (socket + "/.s.PGSQL.\(port)").utf8.count > 100 {
            socket = "/tmp/tributary-\(Self.shortHash(data))"
        }
        return Layout(
            dataDirectory: data, socketDirectory: socket, logFile: "\(socket)/postgres.log",
            lockFile: "\(base)/.\(name).lock", serverUser: serverUser)
    }

    /// The connection to the embedded server's Tributary database.
    public func configuration() throws -> PostgresConfiguration {
        let layout = try layout()
        let socket = (try? Self.runningSocketDirectory(layout.dataDirectory)) ?? layout.socketDirectory
        return try PostgresConfiguration(
            connectionString: Self.conninfo([
                ("host", socket), ("port", String(port)), ("user", user), ("dbname", database),
            ]))
    }

    /// A `postgresql://` URL for the embedded server, for `psql` and other tools.
    public func url() throws -> String {
        let layout = try layout()
        let socket = (try? Self.runningSocketDirectory(layout.dataDirectory)) ?? layout.socketDirectory
        let host =
            socket.addingPercentEncoding(withAllowedCharacters: CharacterSet(charactersIn: "-._~").union(.alphanumerics))
            ?? socket
        return "postgresql://\(user)@/\(database)?host=\(host)&port=\(port)"
    }

    // MARK: - Binaries

    /// Finds `initdb`, `pg_ctl` and `postgres`: `TRIBUTARY_PG_BIN`, then `pg_config --bindir`, then
    /// `/usr/lib/postgresql/<newest>/bin`, `/usr/local/pgsql/bin`, then `PATH`.
    public static func findBinaries(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> String {
        var candidates: [String] = []
        if let explicit = environment["TRIBUTARY_PG_BIN"], !explicit.isEmpty {
            guard hasServerBinaries(explicit) else {
                throw PostgresError(
                    .embeddedServer, "TRIBUTARY_PG_BIN is \(explicit), which holds no initdb and pg_ctl",
                    hint: "point it at PostgreSQL's bin directory (where pg_ctl is)")
            }
            return explicit
        }
        if let pgConfig = ProcessRunner.which("pg_config"),
            let output = try? ProcessRunner.run(pgConfig, ["--bindir"]), output.status == 0
        {
            candidates.append(output.text.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let debian = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: debian)) ?? []
        candidates += versions.compactMap { Int($0) }.sorted(by: >).map { "\(debian)/\($0)/bin" }
        candidates.append("/usr/local/pgsql/bin")
        if let initdb = ProcessRunner.which("initdb") { candidates.append((initdb as NSString).deletingLastPathComponent) }
        if let found = candidates.first(where: hasServerBinaries) { return found }
        throw PostgresError(
            .embeddedServer,
            "PostgreSQL server binaries (initdb, pg_ctl) were not found, so the embedded server cannot start",
            hint: "install them (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@16), "
                + "set TRIBUTARY_PG_BIN to their directory, or set DATABASE_URL to use an existing server")
    }

    static func hasServerBinaries(_ directory: String) -> Bool {
        ["initdb", "pg_ctl", "postgres"].allSatisfy { FileManager.default.isExecutableFile(atPath: "\(directory)/\($0)") }
    }

    // MARK: - Lifecycle

    /// Makes sure the server is running and the database exists, creating the cluster on first use; returns the
    /// configuration to connect with. Safe to call from several processes at once (a file lock serializes them).
    @discardableResult
    public func start() async throws -> PostgresConfiguration {
        try await runOffCooperativePool { try self.startServer() }
        try await createDatabaseIfMissing()
        return try configuration()
    }

    private func startServer() throws {
        let layout = try layout()
        let bin = try Self.findBinaries()
        try prepareDirectories(layout)
        try withFileLock(layout.lockFile) {
            if !FileManager.default.fileExists(atPath: "\(layout.dataDirectory)/PG_VERSION") {
                try initialize(layout, bin: bin)
            }
            if try !isRunning(layout, bin: bin) {
                try writeSettings(layout)
                logger.info("starting the embedded PostgreSQL server", metadata: ["pgdata": "\(layout.dataDirectory)"])
                let output = try ProcessRunner.run(
                    "\(bin)/pg_ctl",
                    ["-D", layout.dataDirectory, "-l", layout.logFile, "-w", "-t", "60", "-s", "start"],
                    as: layout.serverUser)
                guard output.status == 0 else {
                    let log = (try? String(contentsOfFile: layout.logFile, encoding: .utf8)) ?? ""
                    let tail = log.split(whereSeparator: \.isNewline).suffix(4).joined(separator: " | ")
                    throw PostgresError(
                        .embeddedServer,
                        "the embedded PostgreSQL server in \(layout.dataDirectory) did not start: \(output.tail) \(tail)",
                        hint: "see \(layout.logFile)")
                }
            }
        }
    }

    /// Makes a streaming replica of this running server in `dataDirectory` (`pg_basebackup -R`: a hot standby that
    /// follows this server over its Unix socket), for trying and testing reads from a replica. Start it with
    /// ``start()``; it serves reads of every database of this server, and refuses writes.
    public func makeReplica(dataDirectory: String) async throws -> EmbeddedPostgres {
        let replica = EmbeddedPostgres(dataDirectory: dataDirectory, database: database, logger: logger)
        let source = try layout(), target = try replica.layout()
        let bin = try Self.findBinaries()
        let user = user, port = port
        try await runOffCooperativePool {
            try FileManager.default.createDirectory(atPath: target.dataDirectory, withIntermediateDirectories: true)
            if let owner = target.serverUser { try replica.chown(target.dataDirectory, to: owner) }
            _ = chmod(target.dataDirectory, 0o700)
            let output = try ProcessRunner.run(
                "\(bin)/pg_basebackup",
                [
                    "-h", source.socketDirectory, "-p", String(port), "-U", user, "-D", target.dataDirectory, "-R", "-X",
                    "stream",
                    "-c", "fast",
                ],
                as: target.serverUser)
            guard output.status == 0 else {
                throw PostgresError(.embeddedServer, "pg_basebackup into \(target.dataDirectory) failed: \(output.tail)")
            }
        }
        return replica
    }

    /// Stops the server (fast shutdown: open sessions are ended, committed data is safe). Returns false if it was
    /// not running.
    @discardableResult
    public func stop() async throws -> Bool {
        try await runOffCooperativePool { try self.stopServer() }
    }

    private func stopServer() throws -> Bool {
        let layout = try layout()
        let bin = try Self.findBinaries()
        guard FileManager.default.fileExists(atPath: "\(layout.dataDirectory)/PG_VERSION"),
            try isRunning(layout, bin: bin)
        else { return false }
        let output = try ProcessRunner.run(
            "\(bin)/pg_ctl", ["-D", layout.dataDirectory, "-m", "fast", "-w", "-t", "60", "-s", "stop"],
            as: layout.serverUser)
        guard output.status == 0 else {
            throw PostgresError(.embeddedServer, "could not stop the embedded server: \(output.tail)")
        }
        return true
    }

    /// What state the embedded server is in.
    public struct Status: Sendable {
        public var initialized: Bool
        public var running: Bool
        public var pid: Int?
        public var version: String?
        public var layout: Layout
    }

    public func status() async throws -> Status {
        try await runOffCooperativePool { try self.readStatus() }
    }

    private func readStatus() throws -> Status {
        let layout = try layout()
        let initialized = FileManager.default.fileExists(atPath: "\(layout.dataDirectory)/PG_VERSION")
        var running = false
        if initialized, let bin = try? Self.findBinaries() {
            running = try isRunning(layout, bin: bin)
        }
        let version = try? String(contentsOfFile: "\(layout.dataDirectory)/PG_VERSION", encoding: .utf8)
        let pid = running ? Self.postmasterPID(layout.dataDirectory).flatMap { Int($0[0]) } : nil
        var effective = layout
        if running, let socket = try? Self.runningSocketDirectory(layout.dataDirectory) {
            effective.socketDirectory = socket
        }
        return Status(
            initialized: initialized, running: running, pid: pid,
            version: version?.trimmingCharacters(in: .whitespacesAndNewlines), layout: effective)
    }

    // MARK: - Steps

    private func prepareDirectories(_ layout: Layout) throws {
        let manager = FileManager.default
        let base = (layout.dataDirectory as NSString).deletingLastPathComponent
        do {
            try manager.createDirectory(atPath: base, withIntermediateDirectories: true)
            try manager.createDirectory(atPath: layout.socketDirectory, withIntermediateDirectories: true)
            try manager.setAttributes([.posixPermissions: 0o700], ofItemAtPath: layout.socketDirectory)
            if let user = layout.serverUser {
                try chown(layout.socketDirectory, to: user)
            }
        } catch let error as PostgresError {
            throw error
        } catch {
            throw PostgresError(
                .embeddedServer, "cannot create the embedded server's directories under \(base): \(error.localizedDescription)",
                hint: "set TRIBUTARY_PGDATA to a writable directory, or set DATABASE_URL")
        }
    }

    private func initialize(_ layout: Layout, bin: String) throws {
        let staging = layout.dataDirectory + ".init"
        try? FileManager.default.removeItem(atPath: staging)
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        if let user = layout.serverUser { try chown(staging, to: user) }
        logger.info("creating the embedded PostgreSQL cluster", metadata: ["pgdata": "\(layout.dataDirectory)"])
        let common = ["-D", staging, "-U", user, "--auth=trust", "--encoding=UTF8", "--no-instructions"]
        var output = try ProcessRunner.run("\(bin)/initdb", common + ["--locale=C.UTF-8"], as: layout.serverUser)
        if output.status != 0 {
            // Some systems lack the C.UTF-8 locale; the C locale always exists.
            try? FileManager.default.removeItem(atPath: staging)
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
            if let user = layout.serverUser { try chown(staging, to: user) }
            output = try ProcessRunner.run("\(bin)/initdb", common + ["--no-locale"], as: layout.serverUser)
        }
        guard output.status == 0 else {
            try? FileManager.default.removeItem(atPath: staging)
            throw PostgresError(.embeddedServer, "initdb failed for \(layout.dataDirectory): \(output.tail)")
        }
        let conf = "\(staging)/postgresql.conf"
        let include =
            "\n# Added by Tributary: socket location and embedded-server settings.\ninclude_if_exists = 'tributary.conf'\n"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: conf))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(include.utf8))
        try handle.close()
        // The rename makes the cluster appear whole or not at all.
        try FileManager.default.moveItem(atPath: staging, toPath: layout.dataDirectory)
    }

    /// Writes the settings that depend on where the cluster is, on every start (the project may have moved).
    private func writeSettings(_ layout: Layout) throws {
        func quoted(_ value: String) -> String { "'" + value.replacingAll("'", with: "''") + "'" }
        let settings = """
            # Written by Tributary on every start of the embedded server; edits are overwritten.
            listen_addresses = ''
            port = \(port)
            unix_socket_directories = \(quoted(layout.socketDirectory))
            unix_socket_permissions = 0700
            # Room for a server, workers and a parallel test run (Swift Testing starts every test at once, each with
            # its own pool, stages and rebuild sessions: 300 was reached).
            max_connections = 500

            """ + settings.sorted { $0.key < $1.key }.map { "\($0.key) = \(quoted($0.value))\n" }.joined()
        let path = "\(layout.dataDirectory)/tributary.conf"
        try settings.write(toFile: path, atomically: false, encoding: .utf8)
        if let user = layout.serverUser { try chown(path, to: user) }
    }

    private func isRunning(_ layout: Layout, bin: String) throws -> Bool {
        let output = try ProcessRunner.run("\(bin)/pg_ctl", ["-D", layout.dataDirectory, "status"], as: layout.serverUser)
        return output.status == 0
    }

    private func createDatabaseIfMissing() async throws {
        let admin = try configuration().with(database: "postgres")
        let connection = try await PostgresConnection.connect(configuration: admin, logger: logger)
        defer { Task { await connection.close() } }
        let exists = try await connection.query("SELECT 1 FROM pg_database WHERE datname = \(database)")
        if !exists.isEmpty { return }
        do {
            try await connection.execute("CREATE DATABASE \(identifier: database)")
        } catch let error as PostgresError where error.sqlState == .duplicateDatabase {
            // Another process created it first.
        }
    }

    // MARK: - Helpers

    /// The lines of `postmaster.pid`: pid, data directory, start time, port, socket directory, …
    static func postmasterPID(_ dataDirectory: String) -> [String]? {
        guard let text = try? String(contentsOfFile: "\(dataDirectory)/postmaster.pid", encoding: .utf8) else {
            return nil
        }
        return text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    }

    /// The socket directory the running server actually uses.
    static func runningSocketDirectory(_ dataDirectory: String) throws -> String {
        guard let lines = postmasterPID(dataDirectory), lines.count > 4, !lines[4].isEmpty else {
            throw PostgresError(.embeddedServer, "the embedded server is not running")
        }
        return lines[4]
    }

    /// Whether `user` can write in the directory that will hold `path`, as far as the directories above allow.
    static func userCanReach(_ user: String, parentOf path: String) -> Bool {
        guard let entry = getpwnam(user) else { return false }
        let uid = entry.pointee.pw_uid
        let gid = entry.pointee.pw_gid
        var directory = (path as NSString).deletingLastPathComponent
        var components: [String] = []
        while directory != "/" && !directory.isEmpty {
            components.append(directory)
            directory = (directory as NSString).deletingLastPathComponent
        }
        for dir in components {
            var info = stat()
            guard stat(dir, &info) == 0 else { continue }  // created later, by root, with default permissions
            let mode = info.st_mode
            let searchable =
                info.st_uid == uid ? mode & S_IXUSR != 0 : info.st_gid == gid ? mode & S_IXGRP != 0 : mode & S_IXOTH != 0
            if !searchable { return false }
        }
        return true
    }

    static func shortHash(_ text: String) -> String {
        String(UInt64(bitPattern: AdvisoryLockKey(name: text).value), radix: 16)
    }

    /// Quotes key/value pairs for a libpq connection string.
    static func conninfo(_ pairs: [(String, String)]) -> String {
        pairs.map { key, value in
            "\(key)='" + value.replacingAll("\\", with: "\\\\").replacingAll("'", with: "\\'") + "'"
        }.joined(separator: " ")
    }

    private func chown(_ path: String, to user: String) throws {
        guard let entry = getpwnam(user), Glibc.chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0 else {
            throw PostgresError(.embeddedServer, "cannot hand \(path) to the '\(user)' user (chown failed)")
        }
    }

    private func withFileLock<T>(_ path: String, _ body: () throws -> T) throws -> T {
        let descriptor = open(path, O_CREAT | O_RDWR, 0o600)
        guard descriptor >= 0 else {
            throw PostgresError(.embeddedServer, "cannot open the lock file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        while flock(descriptor, LOCK_EX) != 0 {
            if errno != EINTR {
                throw PostgresError(.embeddedServer, "cannot lock \(path): \(String(cString: strerror(errno)))")
            }
        }
        defer { flock(descriptor, LOCK_UN) }
        return try body()
    }
}
