import CLibPQ
import Foundation

/// Where and how to connect: a libpq connection string plus Tributary's defaults.
///
/// The string is either a URL (`postgresql://user@host:5432/db?sslmode=require`) or key/value pairs
/// (`host=/run/pg dbname=cdp`). Whatever it leaves out, libpq takes from its own `PG*` variables, `~/.pgpass`
/// and service files, exactly as `psql` would.
public struct PostgresConfiguration: Sendable, CustomStringConvertible {
    /// The connection string as given; empty means libpq's environment alone.
    public var connectionString: String
    /// Settings that override the connection string (for example a different database for a test).
    public var overrides: [String: String] = [:]
    /// What the connection is for, shown as `application_name` in `pg_stat_activity` and the server log
    /// (`tributary serve: identity`), unless the connection string or `PGAPPNAME` names the application.
    public var applicationName = "tributary"
    /// Session settings every connection made with this configuration applies once, right after it connects, in
    /// this order (`SET name TO 'value'`). Tributary's own connections turn JIT off: its statements are short and
    /// frequent, and compiling them costs far more than it saves (one ingest commit: 800 ms with JIT, 30 ms
    /// without). SQL that users write (a sync's `source.query`) runs with `SET LOCAL jit TO DEFAULT`, the server's
    /// own setting; see ``PostgresConnection/useServerDefaults()``.
    public var sessionSettings: [SessionSetting] = PostgresConfiguration.defaultSessionSettings

    /// One session setting applied at connect.
    public struct SessionSetting: Sendable, Equatable, CustomStringConvertible {
        /// The parameter's name (`jit`, `statement_timeout`, `auto_explain.log_min_duration`).
        public var name: String
        /// Its value, as `SET` takes it (`off`, `5min`).
        public var value: String

        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }

        public var description: String { "\(name)=\(value)" }

        /// The statement that applies it; the name is quoted as identifiers are, the value as a literal.
        func sql() throws -> String {
            let name = try self.name.split(separator: ".", omittingEmptySubsequences: false)
                .map { try SQLQuoting.identifier(String($0)) }.joined(separator: ".")
            return "SET \(name) TO \(try SQLQuoting.literal(value))"
        }
    }

    /// The settings Tributary's connections apply unless told otherwise: `jit = off`.
    public static let defaultSessionSettings = [SessionSetting("jit", "off")]

    /// The same server, for a connection of the given role: `role` becomes its `application_name` (unless the
    /// connection string names one) and `settings` are applied after the defaults (a later one of the same name wins).
    ///
    /// ```swift
    /// let identity = configuration.forRole("tributary serve: identity", settings: [.init("lock_timeout", "1min")])
    /// ```
    public func forRole(_ role: String, settings: [SessionSetting] = []) -> PostgresConfiguration {
        var copy = self
        copy.applicationName = role
        copy.sessionSettings += settings
        return copy
    }

    /// Validates the string with libpq's own parser.
    ///
    /// - Throws: ``PostgresError/Kind/configuration`` naming what libpq found wrong (the password is never shown).
    public init(connectionString: String) throws {
        self.connectionString = connectionString
        _ = try Self.parse(connectionString)
    }

    /// The environment variables that mean "use this server" rather than the embedded default.
    public static let environmentKeys = ["DATABASE_URL", "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGSERVICE"]

    /// The configuration the environment selects: `DATABASE_URL` if set, else libpq's `PG*` variables when
    /// any of `PGHOST`, `PGHOSTADDR`, `PGPORT`, `PGDATABASE` or `PGSERVICE` is set; nil when none is.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> PostgresConfiguration? {
        if let url = environment["DATABASE_URL"], !url.isEmpty {
            do {
                return try PostgresConfiguration(connectionString: url)
            } catch let error as PostgresError {
                throw PostgresError(
                    .configuration, "DATABASE_URL is not a valid connection string: \(error.message)",
                    hint: "expected postgresql://user:password@host:port/database?sslmode=…")
            }
        }
        if environmentKeys.dropFirst().contains(where: { !(environment[$0] ?? "").isEmpty }) {
            return try PostgresConfiguration(connectionString: "")
        }
        return nil
    }

    /// The same server with another database.
    public func with(database: String) -> PostgresConfiguration {
        var copy = self
        copy.overrides["dbname"] = database
        return copy
    }

    /// The connection string with the overrides applied, as libpq key/value pairs (password included, if any):
    /// for handing the same target to another process through `DATABASE_URL`.
    public var resolvedConnectionString: String {
        var merged = (try? Self.parse(connectionString)) ?? [:]
        for (key, value) in overrides { merged[key] = value }
        return EmbeddedPostgres.conninfo(merged.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
    }

    /// The settings that will be used, password left out: `host=/tmp port=5432 dbname=cdp user=app`.
    public var description: String {
        guard let options = try? Self.parse(connectionString) else { return "(invalid connection string)" }
        var merged = options
        for (key, value) in overrides { merged[key] = value }
        let env = ProcessInfo.processInfo.environment
        let host = merged["host"] ?? merged["hostaddr"] ?? env["PGHOST"] ?? env["PGHOSTADDR"] ?? "(default socket)"
        var parts = ["host=\(host)"]
        parts.append("port=\(merged["port"] ?? env["PGPORT"] ?? "5432")")
        if let db = merged["dbname"] ?? env["PGDATABASE"] { parts.append("dbname=\(db)") }
        if let user = merged["user"] ?? env["PGUSER"] { parts.append("user=\(user)") }
        if let sslmode = merged["sslmode"] ?? env["PGSSLMODE"] { parts.append("sslmode=\(sslmode)") }
        return parts.joined(separator: " ")
    }

    /// The keywords and values for `PQconnectdbParams`, with Tributary's defaults placed so the user's win.
    func connectParameters() -> [(String, String)] {
        var parameters: [(String, String)] = [("fallback_application_name", applicationName)]
        if ProcessInfo.processInfo.environment["PGCONNECT_TIMEOUT"] == nil {
            parameters.append(("connect_timeout", "10"))
        }
        // With expand_dbname, the first dbname is read as the whole connection string; later keys override it.
        parameters.append(("dbname", connectionString))
        for key in overrides.keys.sorted() { parameters.append((key, overrides[key]!)) }
        return parameters
    }

    /// libpq quotes the whole URL in some messages; this hides the password it may contain.
    static func redactingPassword(in message: String, of url: String) -> String {
        guard let scheme = url.range(of: "://") else { return message }
        let rest = url[scheme.upperBound...]
        guard let at = rest.firstIndex(of: "@"), !rest[..<at].contains("/"),
            let colon = rest[..<at].firstIndex(of: ":")
        else { return message }
        let password = String(rest[rest.index(after: colon)..<at])
        return password.isEmpty ? message : message.replacingOccurrences(of: password, with: "***")
    }

    /// Parses a connection string with libpq; returns only the options it sets.
    static func parse(_ text: String) throws -> [String: String] {
        if text.isEmpty { return [:] }
        var errorMessage: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(text, &errorMessage) else {
            var reason = "libpq could not parse it"
            if let errorMessage {
                reason = redactingPassword(in: String(cString: errorMessage).replacingNewlines(), of: text)
                PQfreemem(errorMessage)
            }
            throw PostgresError(.configuration, "invalid connection string: \(reason)")
        }
        defer { PQconninfoFree(options) }
        var result: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val {
                result[String(cString: keyword)] = String(cString: value)
            }
            option += 1
        }
        return result
    }
}
