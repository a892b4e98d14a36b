import CLibPQ

/// The complete result of one statement: its columns, its rows and its command tag.
///
/// Rows are copied out of libpq's result, so a `PostgresRows` can be kept and passed between tasks. For results
/// too large to hold, use `COPY … TO STDOUT` (``PostgresConnection/copyOut(_:chunk:)``) or a cursor.
public struct PostgresRows: Sendable, RandomAccessCollection {
    /// A result column: its name and type.
    public struct Column: Sendable, Hashable {
        public var name: String
        public var type: PostgresType
    }

    public let columns: [Column]
    /// Row-major cells; nil is SQL NULL.
    let cells: [String?]
    /// The command tag, for example `INSERT 0 3`.
    public let commandTag: String
    /// Rows affected by INSERT, UPDATE, DELETE, MERGE, SELECT, MOVE, FETCH or COPY; nil for other commands.
    public let affectedRows: Int?
    let columnIndex: [String: Int]

    init(columns: [Column], cells: [String?], commandTag: String, affectedRows: Int?) {
        self.columns = columns
        self.cells = cells
        self.commandTag = commandTag
        self.affectedRows = affectedRows
        var index: [String: Int] = [:]
        for (i, column) in columns.enumerated() where index[column.name] == nil { index[column.name] = i }
        columnIndex = index
    }

    /// Copies everything out of a libpq result.
    init(result: OpaquePointer) {
        var cells = [String?]()
        Self.appendCells(of: result, to: &cells)
        let tag = String(cString: PQcmdStatus(result))
        let tuples = String(cString: PQcmdTuples(result))
        self.init(columns: Self.columns(of: result), cells: cells, commandTag: tag, affectedRows: Int(tuples))
    }

    static func columns(of result: OpaquePointer) -> [Column] {
        (0..<PQnfields(result)).map { i in
            Column(name: String(cString: PQfname(result, i)), type: PostgresType(oid: PQftype(result, i)))
        }
    }

    /// Appends the result's cells, row by row, as text (nil for NULL).
    static func appendCells(of result: OpaquePointer, to cells: inout [String?]) {
        let columnCount = PQnfields(result)
        let rowCount = PQntuples(result)
        cells.reserveCapacity(cells.count + Int(rowCount * columnCount))
        for row in 0..<rowCount {
            for column in 0..<columnCount {
                if PQgetisnull(result, row, column) == 1 {
                    cells.append(nil)
                } else {
                    let length = Int(PQgetlength(result, row, column))
                    let pointer = PQgetvalue(result, row, column)!
                    cells.append(
                        pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
                            String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
                        })
                }
            }
        }
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { columns.isEmpty ? 0 : cells.count / columns.count }
    public subscript(position: Int) -> PostgresRow { PostgresRow(rows: self, index: position) }

    /// The first row's first column, decoded: handy for `SELECT count(*) …`.
    public func scalar<T: PostgresDecodable>(_ type: T.Type = T.self) throws -> T {
        guard let row = first, !columns.isEmpty else {
            throw PostgresError(.decoding, "expected a row with a value, but the query returned no rows")
        }
        return try row[0].decode(T.self)
    }
}

/// One row of a ``PostgresRows``.
public struct PostgresRow: Sendable {
    let rows: PostgresRows
    let index: Int

    public var columns: [PostgresRows.Column] { rows.columns }

    /// The cell at a column position.
    public subscript(column: Int) -> PostgresCell {
        precondition(column >= 0 && column < rows.columns.count, "column \(column) is out of range")
        let info = rows.columns[column]
        return PostgresCell(text: rows.cells[index * rows.columns.count + column], type: info.type, column: info.name)
    }

    /// The cell of a named column; a missing column yields a cell whose decoding fails with its name.
    public subscript(name: String) -> PostgresCell {
        guard let column = rows.columnIndex[name] else {
            let known = rows.columns.map(\.name).joined(separator: ", ")
            return PostgresCell(missing: name, known: known)
        }
        return self[column]
    }

    /// Decodes every column into a tuple: `let (id, email) = try row.decode((Int, String?).self)`.
    public func decode<each T: PostgresDecodable>(_ types: (repeat each T).Type) throws -> (repeat each T) {
        var column = 0
        func next<V: PostgresDecodable>(_ type: V.Type) throws -> V {
            defer { column += 1 }
            guard column < rows.columns.count else {
                throw PostgresError(.decoding, "the row has \(rows.columns.count) columns; more were requested")
            }
            return try self[column].decode(V.self)
        }
        return (repeat try next((each T).self))
    }
}

/// One value of a row, with what is needed to decode it and to say what went wrong.
public struct PostgresCell: Sendable {
    /// The value's text form; nil for SQL NULL.
    public let text: String?
    public let type: PostgresType
    public let column: String
    private let missingColumns: String?

    init(text: String?, type: PostgresType, column: String) {
        self.text = text
        self.type = type
        self.column = column
        missingColumns = nil
    }

    init(missing name: String, known: String) {
        text = nil
        type = .unspecified
        column = name
        missingColumns = known
    }

    /// True when the value is SQL NULL.
    public var isNull: Bool { text == nil }

    /// Decodes the value. SQL NULL decodes only into an Optional; for other types it is an error naming the column.
    ///
    /// ```swift
    /// let id = try row["id"].decode(Int.self)
    /// let email = try row["email"].decode(String?.self)
    /// ```
    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self) throws -> T {
        guard let text = try present() else {
            guard let null = T.postgresNull() else {
                throw PostgresError(.decoding, "column '\(column)' is NULL; decode it as \(T.self)? to accept NULL")
            }
            return null
        }
        return try decodeText(text, as: T.self)
    }

    private func present() throws -> String? {
        if let missingColumns {
            throw PostgresError(.decoding, "the result has no column '\(column)' (it has: \(missingColumns))")
        }
        return text
    }

    private func decodeText<T: PostgresDecodable>(_ text: String, as: T.Type) throws -> T {
        do {
            return try T(postgresText: text, type: type)
        } catch let failure as DecodingFailure {
            throw PostgresError(.decoding, "column '\(column)' (\(type)) cannot be decoded as \(T.self): \(failure.reason)")
        }
    }
}
