import Foundation
import Postgres
import TributaryModel

/// Finds the directory that holds `migrations/` and `sql/`.
///
/// Looked for, in order: `TRIBUTARY_SQL_DIR`; the current directory and its parents; the directory of the running
/// executable and its parents (so `.build/debug/tributary` finds the checkout it was built from).
public struct ProjectFiles: Sendable {
    /// The directory that holds `migrations/` and `sql/`.
    public let root: URL
    public var migrationsDirectory: URL { root.appendingPathComponent("migrations") }
    public var sqlDirectory: URL { root.appendingPathComponent("sql") }

    public init(root: URL) { self.root = root }

    public static func locate(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> ProjectFiles {
        if let explicit = environment["TRIBUTARY_SQL_DIR"], !explicit.isEmpty {
            let url = URL(fileURLWithPath: explicit)
            guard holdsSQL(url) else {
                throw PostgresError(
                    .configuration, "TRIBUTARY_SQL_DIR is \(explicit), which has no migrations/ directory",
                    hint: "point it at the directory that holds Tributary's migrations/ and sql/")
            }
            return ProjectFiles(root: url)
        }
        var starts = [URL(fileURLWithPath: FileManager.default.currentDirectoryPath)]
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        starts.append(executable.deletingLastPathComponent())
        starts.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        for start in starts {
            var directory = start.standardizedFileURL
            while true {
                if holdsSQL(directory) { return ProjectFiles(root: directory) }
                let parent = directory.deletingLastPathComponent()
                if parent.path == directory.path { break }
                directory = parent
            }
        }
        throw PostgresError(
            .configuration, "cannot find Tributary's migrations/ and sql/ directories",
            hint: "run from the Tributary checkout or set TRIBUTARY_SQL_DIR to the directory that holds them")
    }

    static func holdsSQL(_ directory: URL) -> Bool {
        var isDirectory: ObjCBool = false
        let migrations = directory.appendingPathComponent("migrations").path
        let sql = directory.appendingPathComponent("sql").path
        return FileManager.default.fileExists(atPath: migrations, isDirectory: &isDirectory) && isDirectory.boolValue
            && FileManager.default.fileExists(atPath: sql)
            && FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path)
    }
}
