import ArgumentParser
import Foundation
import Postgres
import TributaryGovernance
import TributaryModel

extension TributaryCommand {
    struct RolesGroup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "roles",
            abstract: "PII protection: the read-only tributary_analyst role over masked views, and tributary_pii to unmask them.",
            subcommands: [Setup.self, Grant.self])
    }
}

extension TributaryCommand.RolesGroup {
    struct Setup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Create the roles tributary_analyst and tributary_pii if missing and grant the analyst the views of schema analyst.",
            discussion: """
                tributary_analyst may read the views of schema analyst (personal data masked) and nothing else; members of \
                tributary_pii see those views unmasked. CREATE on schemas is revoked from PUBLIC in this database. Roles \
                are cluster-wide but grants are per database: run this in every database Tributary uses. Idempotent.
                """)
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print the SQL it would run; change nothing.") var dryRun = false

        func run() async throws {
            let report = try await global.withMigratedClient(logger: global.makeLogger()) { client in
                try await Roles(client: client).setup(actor: .cli, dryRun: dryRun)
            }
            if dryRun {
                for statement in report.statements { print("\(statement);") }
                print("dry run: nothing was changed")
                return
            }
            print(
                "roles: \(report.createdRoles.isEmpty ? "\(Roles.analyst) and \(Roles.pii) already existed" : "created \(report.createdRoles.joined(separator: ", "))")"
            )
            if !report.revokedCreate.isEmpty {
                print("revoked CREATE from PUBLIC on schema \(report.revokedCreate.joined(separator: ", "))")
            }
            print(
                "granted \(Roles.analyst) SELECT on \(report.views.count) views of schema \(Roles.schema): \(report.views.joined(separator: ", "))"
            )
            for warning in report.warnings { print("warning: \(warning)") }
            print("give someone access with `tributary roles grant LOGIN` (add --pii to unmask personal data)")
        }
    }

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Grant tributary_analyst (and with --pii tributary_pii) to an existing login role.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The login role, for example 'jane'.") var login: String
        @Flag(help: "Also grant tributary_pii: personal data unmasked.") var pii = false

        func run() async throws {
            let granted = try await global.withMigratedClient(logger: global.makeLogger()) { client in
                try await Roles(client: client).grant(login: login, pii: pii, actor: .cli)
            }
            print(
                granted.isEmpty
                    ? "\(login) already had \(pii ? "\(Roles.analyst) and \(Roles.pii)" : Roles.analyst)"
                    : "granted \(granted.joined(separator: ", ")) to \(login)")
        }
    }
}
