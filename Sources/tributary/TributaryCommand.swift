import ArgumentParser
import Foundation
import Postgres
import TributaryGovernance
import TributaryModel
import TributaryProfiles
import TributaryService

/// `tributary`: the root command.
@main
struct TributaryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tributary",
        abstract: "A warehouse-native customer data platform on PostgreSQL.",
        discussion: """
            With DATABASE_URL (or libpq's PGHOST, PGPORT, PGDATABASE, PGSERVICE) set, commands use that database. \
            With none set, they use an embedded PostgreSQL server under .tributary/ that Tributary creates and starts.
            """,
        version: Tributary.version,
        subcommands: [
            Demo.self, Serve.self, Sources.self, Tokens.self, Import.self, Webhooks.self, IdentityGroup.self,
            ProfilesCommand.self,
            Traits.self, Predictions.self, Segments.self, Syncs.self, Worker.self, CatalogGroup.self, Migrate.self, DB.self,
            Version.self,
            RolesGroup.self,
            RetentionGroup.self,
            Audit.self,
            PrivacyGroup.self,
        ]
    )

    /// Runs the command; errors become one line on standard error and a non-zero exit.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as any ReportedError {
            fail(error.description)
        } catch {
            exit(withError: error)
        }
    }

    private static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        Foundation.exit(1)
    }
}

/// Reads a definitions file (computed traits, segments, syncs); a file that cannot be read is a one-line error.
func readDefinitionsFile(_ file: String) throws -> Data {
    do { return try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
        throw CLIError("cannot read \(file): \(error.localizedDescription)")
    }
}

/// A failure a command reports in one line.
struct CLIError: ReportedError {
    let description: String
    init(_ description: String) { self.description = description }
}

extension TributaryCommand {
    struct Version: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print Tributary's version.")
        func run() async throws {
            print("tributary \(Tributary.version)")
        }
    }
}
