import Foundation
import Postgres
import PostgresTesting
import Testing

/// `tributary privacy …` end to end: consent, export to a private file, delete, the request log, later imports
/// dropped, and one-line errors for bad identifiers.
@Suite struct PrivacyCLITests {
    let cli = CLITests()

    @Test func consentExportDeleteAndRequests() async throws {
        try await cli.withDatabaseURL { url in
            let env = ["DATABASE_URL": url]
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "privacy-cli-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let jsonl = directory.appendingPathComponent("events.jsonl")
            try """
            {"type":"identify","userId":"u-1","traits":{"email":"Ann@Example.com","plan":"pro"},"messageId":"m1","timestamp":"2026-11-01T10:00:00Z"}
            {"type":"track","userId":"u-1","event":"Order Completed","messageId":"m2","timestamp":"2026-11-01T10:01:00Z"}
            {"type":"identify","userId":"u-2","traits":{"plan":"free"},"messageId":"m3","timestamp":"2026-11-01T10:00:00Z"}
            """.write(to: jsonl, atomically: true, encoding: .utf8)
            #expect(try await cli.run(["sources", "create", "crm"], environment: env).status == 0)
            #expect(try await cli.run(["import", jsonl.path, "--source", "crm"], environment: env).status == 0)

            let consent = try await cli.run(
                ["privacy", "consent", "email:ann@example.com", "--grant", "Analytics", "--deny", "Marketing"], environment: env)
            #expect(
                consent.status == 0 && consent.stdout.contains("recorded consent (Analytics=granted, Marketing=denied)"),
                "\(consent.stdout)\(consent.stderr)")
            #expect(try await cli.run(["identity", "run", "--once"], environment: env).status == 0)
            #expect(try await cli.run(["profiles", "run", "--once"], environment: env).status == 0)

            let file = directory.appendingPathComponent("ann.json")
            let export = try await cli.run(["privacy", "export", "user_id:u-1", "--output", file.path], environment: env)
            #expect(export.status == 0 && export.stdout.contains("(3 events)"), "\(export.stdout)\(export.stderr)")
            let permissions = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int
            #expect(permissions == 0o600)
            let document = try String(contentsOf: file, encoding: .utf8)
            #expect(
                document.contains(#""plan": "pro""#) && document.contains(#""purpose" : "Marketing", "granted" : false"#)
                    && document.contains("Order Completed") && !document.contains("u-2"), "\(document)")
            let stdout = try await cli.run(["privacy", "export", "email:ANN@example.com"], environment: env)
            #expect(stdout.status == 0 && stdout.stdout.hasPrefix("{") && stdout.stdout.contains("Order Completed"))

            let delete = try await cli.run(["privacy", "delete", "email: Ann@Example.com"], environment: env)
            #expect(
                delete.status == 0
                    && delete.stdout.hasPrefix(
                        "deleted 1 profile(s) and 3 events; 2 identifier(s) suppressed; no destination held them"),
                "\(delete.stdout)\(delete.stderr)")
            // A later import of the same person is dropped.
            try #"{"type":"track","userId":"u-1","event":"Back","messageId":"m9","timestamp":"2026-11-02T10:00:00Z"}"#
                .write(to: jsonl, atomically: true, encoding: .utf8)
            let again = try await cli.run(["import", jsonl.path, "--source", "crm"], environment: env)
            #expect(again.status == 0 && again.stdout.contains("0 stored"), "\(again.stdout)")

            let requests = try await cli.run(["privacy", "requests"], environment: env)
            let lines = requests.stdout.split(separator: "\n")
            #expect(
                lines.count == 4 && lines[0].contains(" delete  succeeded ") && lines[3].contains(" consent  succeeded "),
                "\(requests.stdout)")
            #expect(!requests.stdout.contains("ann@example.com") && !requests.stdout.contains("u-1"))

            for (arguments, message) in [
                (["privacy", "delete", "ann@example.com"], "'ann@example.com' is not KIND:VALUE"),
                (["privacy", "delete", "emial:ann@example.com"], "'emial' is not an identifier kind in use or configured"),
                (["privacy", "export", "email:"], "the identifier 'email:' has an empty value"),
                (["privacy", "consent", "user_id:u-2"], "give at least one --grant PURPOSE or --deny PURPOSE"),
                (["privacy", "consent", "user_id:u-2", "--grant", "A", "--deny", "A"], "'A' is both granted and denied"),
            ] {
                cli.expectOneLineError(try await cli.run(arguments, environment: env), containing: [message])
            }
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("missing.json").path))
        }
    }
}
