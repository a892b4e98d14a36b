import CLibPQ

extension PostgresConnection {
    /// Runs a query and hands its rows to `body` as they arrive, in batches of at most `batchSize` rows, so a
    /// result of any size is never held whole (libpq's single-row mode). Returns the number of rows.
    ///
    /// If `body` throws, the query is cancelled on the server and the error is rethrown; the connection stays usable.
    ///
    /// ```swift
    /// try await connection.forEachRow("SELECT profile_id, traits FROM cdp.profiles") { row in
    ///     try await destination.send(try row["profile_id"].decode(UUID.self))
    /// }
    /// ```
    @discardableResult
    public nonisolated func forEachRow(
        _ query: PostgresQuery, batchSize: Int = 1000, _ body: (PostgresRow) async throws -> Void
    ) async throws -> Int {
        try await startStreaming(query)
        var count = 0
        while let batch = try await nextRows(max: batchSize) {
            do {
                for row in batch {
                    try await body(row)
                    count += 1
                }
            } catch {
                await cancelStreaming()
                throw error
            }
        }
        return count
    }

    func startStreaming(_ query: PostgresQuery) throws {
        let query = try query.validated()
        let handle = try liveHandle()
        let sent = query.withParameters { count, types, values, lengths, formats in
            PQsendQueryParams(handle, query.sql, count, types, values, lengths, formats, 0)
        }
        guard sent == 1, PQsetSingleRowMode(handle) == 1 else {
            while let result = PQgetResult(handle) { PQclear(result) }
            throw PostgresError(.connection, PostgresError.connectionMessage(handle, fallback: "could not send the query"))
        }
        exclusiveOperationInProgress = true
    }

    /// The next rows of a streaming query; nil when it has ended.
    func nextRows(max: Int) throws -> PostgresRows? {
        guard let handle, exclusiveOperationInProgress else { return nil }
        var cells: [String?] = []
        var columns: [PostgresRows.Column]?
        var rows = 0
        while rows < max, let result = PQgetResult(handle) {
            defer { PQclear(result) }
            switch PQresultStatus(result) {
            case PGRES_SINGLE_TUPLE:
                if columns == nil { columns = PostgresRows.columns(of: result) }
                PostgresRows.appendCells(of: result, to: &cells)
                rows += 1
            case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
                // The end: the final result carries no rows; the next PQgetResult returns NULL.
                while let rest = PQgetResult(handle) { PQclear(rest) }
                exclusiveOperationInProgress = false
            default:
                let error = PostgresError.fromResult(result, connection: handle)
                while let rest = PQgetResult(handle) { PQclear(rest) }
                exclusiveOperationInProgress = false
                throw error
            }
            if !exclusiveOperationInProgress { break }
        }
        guard let columns, rows > 0 else {
            exclusiveOperationInProgress = false
            return nil
        }
        return PostgresRows(columns: columns, cells: cells, commandTag: "SELECT \(rows)", affectedRows: rows)
    }

    func cancelStreaming() {
        guard let handle, exclusiveOperationInProgress else { return }
        cancelSignal.sendCancel()
        while let result = PQgetResult(handle) { PQclear(result) }
        exclusiveOperationInProgress = false
    }

}
