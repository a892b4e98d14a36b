import CLibPQ

extension PostgresConnection {
    /// Streams data into `COPY … FROM STDIN`: `body` writes through a buffered writer, and nothing is held in
    /// memory beyond the writer's buffer. Returns the number of rows copied.
    ///
    /// If `body` throws, the COPY is aborted, the server stores none of its rows, and the error is rethrown.
    ///
    /// ```swift
    /// let rows = try await connection.copyIn("COPY t (id, name) FROM STDIN") { writer in
    ///     for (id, name) in pairs { try await writer.write("\(id)\t\(name)\n") }
    /// }
    /// ```
    @discardableResult
    public nonisolated func copyIn(
        _ query: PostgresQuery, bufferSize: Int = 256 * 1024, _ body: (PostgresCopyWriter) async throws -> Void
    ) async throws -> Int {
        try await startCopyIn(query)
        let writer = PostgresCopyWriter(connection: self, bufferSize: bufferSize)
        do {
            try await body(writer)
            try await writer.flush()
        } catch {
            _ = try? await endCopyIn(failure: "aborted by the client: \(error)")
            throw error
        }
        return try await endCopyIn(failure: nil)
    }

    /// Streams `COPY … TO STDOUT` to `chunk`, a buffer of whole rows at a time (at most about `chunkSize`
    /// bytes, or one row if a row is larger). Returns the number of rows copied.
    ///
    /// If `chunk` throws, the COPY is cancelled on the server and the error is rethrown.
    @discardableResult
    public nonisolated func copyOut(
        _ query: PostgresQuery, chunkSize: Int = 256 * 1024, chunk: ([UInt8]) async throws -> Void
    ) async throws -> Int {
        try await startCopyOut(query)
        while true {
            let next: [UInt8]?
            next = try await readCopyOut(maxBytes: chunkSize)
            guard let bytes = next else { break }
            do {
                try await chunk(bytes)
            } catch {
                await cancelCopyOut()
                throw error
            }
        }
        return try await finishCopyOut()
    }

    // MARK: - Steps, each one job on the connection's thread

    func startCopyIn(_ query: PostgresQuery) throws {
        let query = try query.validated()
        let handle = try liveHandle()
        let result = Self.send(query, on: handle)
        defer { PQclear(result) }
        guard let result, PQresultStatus(result) == PGRES_COPY_IN else {
            try check(result, handle: handle, for: query.sql)
            throw PostgresError(.misuse, "copyIn needs a COPY … FROM STDIN statement")
        }
        exclusiveOperationInProgress = true
    }

    func putCopyData(_ bytes: [UInt8]) throws {
        guard let handle, exclusiveOperationInProgress else { throw PostgresError(.misuse, "no COPY FROM STDIN in progress") }
        let sent = bytes.withUnsafeBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                PQputCopyData(handle, $0, Int32(buffer.count))
            }
        }
        if sent != 1 {
            throw PostgresError(
                .connection, "sending COPY data failed: \(PostgresError.connectionMessage(handle, fallback: "unknown error"))")
        }
    }

    func endCopyIn(failure: String?) throws -> Int {
        guard let handle, exclusiveOperationInProgress else { throw PostgresError(.misuse, "no COPY FROM STDIN in progress") }
        exclusiveOperationInProgress = false
        let ended = failure.map { PQputCopyEnd(handle, String($0.prefix(200))) } ?? PQputCopyEnd(handle, nil)
        if ended != 1 {
            throw PostgresError(
                .connection, "ending COPY failed: \(PostgresError.connectionMessage(handle, fallback: "unknown error"))")
        }
        return try Self.collectCopyResult(handle)
    }

    func startCopyOut(_ query: PostgresQuery) throws {
        let query = try query.validated()
        let handle = try liveHandle()
        let result = Self.send(query, on: handle)
        defer { PQclear(result) }
        guard let result, PQresultStatus(result) == PGRES_COPY_OUT else {
            try check(result, handle: handle, for: query.sql)
            throw PostgresError(.misuse, "copyOut needs a COPY … TO STDOUT statement")
        }
        exclusiveOperationInProgress = true
    }

    /// Reads whole rows until about `maxBytes`; nil when the COPY has ended.
    func readCopyOut(maxBytes: Int) throws -> [UInt8]? {
        guard let handle, exclusiveOperationInProgress else { return nil }
        var out: [UInt8] = []
        while out.count < maxBytes {
            var buffer: UnsafeMutablePointer<CChar>?
            let length = PQgetCopyData(handle, &buffer, 0)
            if length > 0, let buffer {
                buffer.withMemoryRebound(to: UInt8.self, capacity: Int(length)) {
                    out.append(contentsOf: UnsafeBufferPointer(start: $0, count: Int(length)))
                }
                PQfreemem(buffer)
            } else if length == -1 {
                exclusiveOperationInProgress = false
                break
            } else {
                exclusiveOperationInProgress = false
                throw PostgresError(
                    .connection, "reading COPY data failed: \(PostgresError.connectionMessage(handle, fallback: "unknown error"))"
                )
            }
        }
        return out.isEmpty && !exclusiveOperationInProgress ? nil : out
    }

    func finishCopyOut() throws -> Int {
        guard let handle else { throw PostgresError(.connection, "the connection to the server is closed") }
        return try Self.collectCopyResult(handle)
    }

    /// Reads the results that end a COPY; returns the rows it copied or throws its error.
    private static func collectCopyResult(_ handle: OpaquePointer) throws -> Int {
        var rows = 0
        var firstError: PostgresError?
        while let result = PQgetResult(handle) {
            defer { PQclear(result) }
            if PQresultStatus(result) == PGRES_COMMAND_OK {
                rows = Int(String(cString: PQcmdTuples(result))) ?? 0
            } else if firstError == nil {
                firstError = PostgresError.fromResult(result, connection: handle)
            }
        }
        if let firstError { throw firstError }
        return rows
    }

    /// Asks the server to cancel the running COPY TO and discards what is still in flight.
    func cancelCopyOut() {
        guard let handle, exclusiveOperationInProgress else { return }
        cancelSignal.sendCancel()
        exclusiveOperationInProgress = false
        drainCopyOut(handle)
    }
}

/// Buffers what a ``PostgresConnection/copyIn(_:bufferSize:_:)`` body writes and sends it in large chunks.
public final class PostgresCopyWriter {
    private let connection: PostgresConnection
    private let bufferSize: Int
    private var buffer: [UInt8] = []

    init(connection: PostgresConnection, bufferSize: Int) {
        self.connection = connection
        self.bufferSize = max(bufferSize, 1024)
        buffer.reserveCapacity(self.bufferSize)
    }

    /// Appends bytes in the statement's COPY format (text, CSV or binary).
    public func write(_ bytes: some Sequence<UInt8>) async throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= bufferSize { try await flush() }
    }

    /// Appends text in the statement's COPY format.
    public func write(_ text: String) async throws {
        try await write(text.utf8)
    }

    /// Sends what is buffered.
    public func flush() async throws {
        guard !buffer.isEmpty else { return }
        let chunk = buffer
        buffer.removeAll(keepingCapacity: true)
        try await connection.putCopyData(chunk)
    }
}
