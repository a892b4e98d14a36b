import CLibPQ

/// A message sent with `NOTIFY channel, 'payload'` or `pg_notify(channel, payload)`.
public struct PostgresNotification: Sendable, Hashable {
    public var channel: String
    public var payload: String
    /// The server process that sent it.
    public var senderPID: Int32

    public init(channel: String, payload: String, senderPID: Int32) {
        self.channel = channel
        self.payload = payload
        self.senderPID = senderPID
    }
}

extension PostgresConnection {
    /// Starts listening on a channel (`LISTEN "channel"`; the name is quoted, so any text is safe).
    public func listen(_ channel: String) throws {
        try run("LISTEN \(identifier: channel)")
    }

    /// Stops listening on a channel.
    public func unlisten(_ channel: String) throws {
        try run("UNLISTEN \(identifier: channel)")
    }

    /// Sends a notification: `SELECT pg_notify($1, $2)`. Inside a transaction it is delivered on commit.
    public func notify(_ channel: String, payload: String = "") throws {
        try run("SELECT pg_notify(\(channel), \(payload))")
    }

    /// Returns the notifications that have arrived, waiting up to `timeout` for the first one.
    ///
    /// Waiting is a `poll` on the connection's socket, so a notification is returned as soon as it arrives.
    public func waitForNotifications(timeout: Duration) throws -> [PostgresNotification] {
        let handle = try liveHandle()
        collectNotifications()
        if pendingNotifications.isEmpty {
            let (seconds, attoseconds) = timeout.components
            let milliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
            if Self.socketReadable(PQsocket(handle), timeoutMilliseconds: milliseconds) {
                if PQconsumeInput(handle) == 0 {
                    throw PostgresError(
                        .connection,
                        "lost the connection while waiting for notifications: \(PostgresError.connectionMessage(handle, fallback: "connection closed"))"
                    )
                }
                collectNotifications()
            }
        }
        defer { pendingNotifications.removeAll() }
        return pendingNotifications
    }

    /// The notifications on the channels this connection listens to, as they arrive, until the consuming task is
    /// cancelled or the connection fails.
    ///
    /// ```swift
    /// try await listener.listen("profile_changed")
    /// for try await note in listener.notifications() { print(note.payload) }
    /// ```
    public nonisolated func notifications(
        wakeInterval: Duration = .milliseconds(200)
    ) -> AsyncThrowingStream<PostgresNotification, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    while !Task.isCancelled {
                        for notification in try await self.waitForNotifications(timeout: wakeInterval) {
                            continuation.yield(notification)
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Moves notifications libpq has already parsed into the pending list.
    func collectNotifications() {
        guard let handle else { return }
        while let notify = PQnotifies(handle) {
            pendingNotifications.append(
                PostgresNotification(
                    channel: String(cString: notify.pointee.relname),
                    payload: String(cString: notify.pointee.extra),
                    senderPID: notify.pointee.be_pid))
            PQfreemem(notify)
        }
    }
}
