import Foundation
import CLibPQ

/// An error from the Postgres layer.
///
/// Server errors carry the fields PostgreSQL reports (SQLSTATE, message, detail, hint, position, and the
/// schema, table, column and constraint involved). ``description`` is one line fit for a terminal or a log.
///
/// ```swift
/// do { try await db.execute("INSERT INTO t(id) VALUES (1)") }
/// catch let error as PostgresError where error.sqlState == .uniqueViolation { … }
/// ```
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, broadly.
    public enum Kind: String, Sendable {
        /// The connection could not be made or was lost.
        case connection
        /// The server rejected a statement; see ``PostgresError/sqlState``.
        case server
        /// A value in a result could not be decoded as the requested Swift type.
        case decoding
        /// A value could not be sent (for example a string with a NUL byte).
        case encoding
        /// No connection became free in time.
        case poolTimeout
        /// The client was shut down.
        case poolClosed
        /// The connection string or other configuration is invalid.
        case configuration
        /// The embedded server could not be found, created, started or stopped.
        case embeddedServer
        /// The connection was used in a way the protocol does not allow (for example a query during COPY).
        case misuse
    }

    public var kind: Kind
    /// The five-character SQLSTATE code, for server errors (and some connection errors).
    public var sqlState: SQLState?
    /// The primary message.
    public var message: String
    public var detail: String?
    public var hint: String?
    /// 1-based character offset into the statement where the server found the error.
    public var position: Int?
    public var schema: String?
    public var table: String?
    public var column: String?
    public var constraint: String?
    /// `ERROR`, `FATAL` and so on, for server errors.
    public var severity: String?

    public init(
        _ kind: Kind, _ message: String, sqlState: SQLState? = nil, detail: String? = nil, hint: String? = nil
    ) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
        self.hint = hint
    }

    /// One line: the message, then the SQLSTATE, detail and hint when present.
    public var description: String {
        var text = message
        if let sqlState { text += " (SQLSTATE \(sqlState.code))" }
        if let detail, !detail.isEmpty { text += "; detail: \(detail)" }
        if let hint, !hint.isEmpty { text += "; hint: \(hint)" }
        return text.replacingNewlines()
    }

    /// Builds the error from a failed result, reading every diagnostic field libpq exposes.
    static func fromResult(_ result: OpaquePointer?, connection: OpaquePointer?) -> PostgresError {
        guard let result else {
            return PostgresError(.connection, connectionMessage(connection, fallback: "query failed: no result"))
        }
        func field(_ code: Int32) -> String? {
            guard let pointer = PQresultErrorField(result, code) else { return nil }
            return String(cString: pointer)
        }
        let primary = field(Int32(UInt8(ascii: "M"))) ?? connectionMessage(connection, fallback: "query failed")
        let state = field(Int32(UInt8(ascii: "C"))).map(SQLState.init)
        let lost = connection.map { PQstatus($0) != CONNECTION_OK } ?? false
        var error = PostgresError(lost && state == nil ? .connection : .server, primary, sqlState: state)
        error.detail = field(Int32(UInt8(ascii: "D")))
        error.hint = field(Int32(UInt8(ascii: "H")))
        error.position = field(Int32(UInt8(ascii: "P"))).flatMap { Int($0) }
        error.schema = field(Int32(UInt8(ascii: "s")))
        error.table = field(Int32(UInt8(ascii: "t")))
        error.column = field(Int32(UInt8(ascii: "c")))
        error.constraint = field(Int32(UInt8(ascii: "n")))
        error.severity = field(Int32(UInt8(ascii: "V")))
        if lost && state == nil {
            error.message = "lost the connection to the server: \(primary)"
        }
        return error
    }

    static func connectionMessage(_ connection: OpaquePointer?, fallback: String) -> String {
        guard let connection, let pointer = PQerrorMessage(connection) else { return fallback }
        let text = String(cString: pointer).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? fallback : text
    }
}

/// A SQLSTATE code, with names for the ones callers commonly test for.
public struct SQLState: Hashable, Sendable, CustomStringConvertible {
    public let code: String
    public init(_ code: String) { self.code = code }
    public var description: String { code }

    public static let uniqueViolation = SQLState("23505")
    public static let foreignKeyViolation = SQLState("23503")
    public static let notNullViolation = SQLState("23502")
    public static let checkViolation = SQLState("23514")
    public static let serializationFailure = SQLState("40001")
    public static let deadlockDetected = SQLState("40P01")
    public static let undefinedTable = SQLState("42P01")
    public static let undefinedColumn = SQLState("42703")
    public static let syntaxError = SQLState("42601")
    public static let duplicateDatabase = SQLState("42P04")
    public static let invalidPassword = SQLState("28P01")
    public static let invalidAuthorization = SQLState("28000")
    public static let invalidCatalogName = SQLState("3D000")
    public static let queryCanceled = SQLState("57014")
    public static let adminShutdown = SQLState("57P01")
    public static let cannotConnectNow = SQLState("57P03")
    public static let invalidTextRepresentation = SQLState("22P02")
    public static let insufficientPrivilege = SQLState("42501")
    public static let lockNotAvailable = SQLState("55P03")
    public static let objectInUse = SQLState("55006")

    /// The class of the code (its first two characters), for example `23` for integrity constraint violations.
    public var errorClass: Substring { code.prefix(2) }
}

extension String {
    func replacingNewlines() -> String {
        split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
    }
}
