import Foundation
import Postgres
import TributaryModel

/// One file of `migrations/`: `NNNN_name.sql`, applied once, in version order, and never edited afterwards.
public struct Migration: Sendable, Hashable {
    public let version: Int
    public let name: String
    public let fileName: String
    public let sql: String
    /// SHA-256 of the file (line endings normalized to LF), in hex.
    public let checksum: String
    /// A migration whose first line is `-- tributary:no-transaction` runs outside a transaction (for statements
    /// such as `CREATE INDEX CONCURRENTLY`); all others run in one transaction each.
    public let runsInTransaction: Bool

    public init(fileName: String, sql: String) throws {
        guard fileName.hasSuffix(".sql"), let underscore = fileName.firstIndex(of: "_"),
            let version = Int(fileName[..<underscore]), fileName[..<underscore].count == 4
        else {
            throw MigrationError(
                "migrations/\(fileName): a migration's name must be NNNN_name.sql (four digits, an underscore, a name)")
        }
        let name = String(fileName[fileName.index(after: underscore)...].dropLast(4))
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") })
        else {
            throw MigrationError("migrations/\(fileName): the name after the number may hold only letters, digits, _ and -")
        }
        self.version = version
        self.name = name
        self.fileName = fileName
        self.sql = sql
        checksum = Self.checksum(of: sql)
        runsInTransaction = !sql.hasPrefix("-- tributary:no-transaction")
    }

    public static func checksum(of sql: String) -> String {
        let normalized = sql.replacingOccurrences(of: "\r\n", with: "\n")
        return sha256Hex(Data(normalized.utf8))
    }

    /// Reads every `.sql` file of a directory, sorted by version; fails on a misnamed file or a repeated version.
    public static func load(from directory: URL) throws -> [Migration] {
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw MigrationError("cannot read \(directory.path): \(error.localizedDescription)")
        }
        var migrations: [Migration] = []
        for file in files.sorted() where file.hasSuffix(".sql") {
            let text = try readText(directory.appendingPathComponent(file))
            migrations.append(try Migration(fileName: file, sql: text))
        }
        var seen: [Int: String] = [:]
        for migration in migrations {
            if let other = seen[migration.version] {
                throw MigrationError(
                    "migrations/\(other) and migrations/\(migration.fileName) have the same version \(migration.version)")
            }
            seen[migration.version] = migration.fileName
        }
        return migrations.sorted { $0.version < $1.version }
    }

    static func readText(_ url: URL) throws -> String {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw MigrationError("cannot read \(url.path)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw MigrationError("\(url.lastPathComponent) is not valid UTF-8")
        }
        return text
    }
}

/// A problem with the migration files or the migration history; its description is one line for the user.
public struct MigrationError: ReportedError {
    public let description: String
    public init(_ description: String) { self.description = description }
}
