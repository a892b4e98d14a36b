import CLibPQ

/// A key for PostgreSQL advisory locks, from a number or derived from a name.
///
/// Names hash with 64-bit FNV-1a, so every process derives the same key from the same name.
public struct AdvisoryLockKey: Hashable, Sendable, CustomStringConvertible {
    public let value: Int64
    public init(_ value: Int64) { self.value = value }

    /// A key derived from a name, for example `AdvisoryLockKey(name: "tributary.migrate")`.
    public init(name: String) {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        value = Int64(bitPattern: hash)
    }

    public var description: String { String(value) }
}

/// Transaction isolation levels.
public enum IsolationLevel: String, Sendable {
    case readCommitted = "READ COMMITTED"
    case repeatableRead = "REPEATABLE READ"
    case serializable = "SERIALIZABLE"
}

extension PostgresConnection {
    /// For the rest of the current transaction, the server's own values of the settings Tributary changes at connect
    /// (``PostgresConfiguration/defaultSessionSettings``: `jit`), for SQL that users write, which should run as it
    /// runs in their own sessions. Must be called inside a transaction (it uses `SET LOCAL`).
    ///
    /// ```swift
    /// try await connection.withTransaction { tx in
    ///     try await tx.useServerDefaults()          // SET LOCAL jit TO DEFAULT
    ///     try await tx.execute(PostgresQuery(unsafeSQL: analystQuery))
    /// }
    /// ```
    public nonisolated func useServerDefaults() async throws {
        for setting in PostgresConfiguration.defaultSessionSettings {
            try await execute(PostgresQuery(unsafeSQL: "SET LOCAL \(try SQLQuoting.identifier(setting.name)) TO DEFAULT"))
        }
    }

    /// Runs `body` in a transaction: `BEGIN`, then `COMMIT` if it returns or `ROLLBACK` if it throws.
    ///
    /// Called inside a transaction, it opens a savepoint instead (see ``withSavepoint(_:)``), so helpers that
    /// need atomicity can be nested.
    ///
    /// ```swift
    /// try await connection.withTransaction { tx in
    ///     try await tx.execute("UPDATE accounts SET n = n - 1 WHERE id = \(a)")
    ///     try await tx.execute("UPDATE accounts SET n = n + 1 WHERE id = \(b)")
    /// }
    /// ```
    @discardableResult
    public nonisolated func withTransaction<T>(
        isolation level: IsolationLevel? = nil,
        _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        if await transactionStatus != .idle {
            return try await withSavepoint(body)
        }
        let begin = level.map { "BEGIN ISOLATION LEVEL \($0.rawValue)" } ?? "BEGIN"
        try await execute(PostgresQuery(unsafeSQL: begin))
        let value: T
        do {
            value = try await body(self)
        } catch {
            await rollbackQuietly()
            throw error
        }
        do {
            try await execute("COMMIT")
        } catch {
            await rollbackQuietly()
            throw error
        }
        return value
    }

    /// Runs `body` inside a savepoint of the current transaction; a throw rolls back to the savepoint only.
    @discardableResult
    public nonisolated func withSavepoint<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let name = await nextSavepointName()
        try await execute("SAVEPOINT \(unescaped: name)")
        let value: T
        do {
            value = try await body(self)
        } catch {
            _ = try? await execute("ROLLBACK TO SAVEPOINT \(unescaped: name)")
            _ = try? await execute("RELEASE SAVEPOINT \(unescaped: name)")
            throw error
        }
        try await execute("RELEASE SAVEPOINT \(unescaped: name)")
        return value
    }

    private func nextSavepointName() -> String {
        savepointCounter += 1
        return "tributary_savepoint_\(savepointCounter)"
    }

    private func rollbackQuietly() {
        guard let handle, PQstatus(handle) == CONNECTION_OK, !exclusiveOperationInProgress else { return }
        if let result = PQexec(handle, "ROLLBACK") { PQclear(result) }
    }

    // MARK: - Advisory locks

    /// Holds a session-level advisory lock while `body` runs, waiting for it if another session holds it.
    ///
    /// ```swift
    /// try await connection.withAdvisoryLock(AdvisoryLockKey(name: "tributary.migrate")) { c in … }
    /// // SELECT pg_advisory_lock($1) … SELECT pg_advisory_unlock($1)
    /// ```
    @discardableResult
    public nonisolated func withAdvisoryLock<T>(
        _ key: AdvisoryLockKey, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await advisoryLock(key)
        let value: T
        do {
            value = try await body(self)
        } catch {
            _ = try? await advisoryUnlock(key)
            throw error
        }
        try await advisoryUnlock(key)
        return value
    }

    /// Takes a session-level advisory lock, waiting while another session holds it; held until
    /// ``advisoryUnlock(_:)`` or the end of the session (a transaction's end does not release it).
    public nonisolated func advisoryLock(_ key: AdvisoryLockKey) async throws {
        try await execute("SELECT pg_advisory_lock(\(key.value))")
    }

    /// Takes a session-level advisory lock if it is free; returns whether it was taken.
    public func tryAdvisoryLock(_ key: AdvisoryLockKey) throws -> Bool {
        try run("SELECT pg_try_advisory_lock(\(key.value))").scalar(Bool.self)
    }

    /// Releases a session-level advisory lock; returns false if this session did not hold it.
    @discardableResult
    public func advisoryUnlock(_ key: AdvisoryLockKey) throws -> Bool {
        try run("SELECT pg_advisory_unlock(\(key.value))").scalar(Bool.self)
    }

    /// Takes a transaction-level advisory lock, released at the end of the current transaction.
    public func advisoryTransactionLock(_ key: AdvisoryLockKey) throws {
        try run("SELECT pg_advisory_xact_lock(\(key.value))")
    }
}
