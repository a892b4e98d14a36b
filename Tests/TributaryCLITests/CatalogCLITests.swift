import Foundation
import Postgres
import PostgresTesting
import Testing

/// `tributary catalog …` end to end: infer, edit, merge, apply, show, and one-line errors.
@Suite struct CatalogCLITests {
    let cli = CLITests()

    @Test func catalogInferApplyShow() async throws {
        try await cli.withDatabaseURL { url in
            let env = ["DATABASE_URL": url]
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "catalog-cli-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let jsonl = directory.appendingPathComponent("events.jsonl")
            let catalog = directory.appendingPathComponent("catalog.json").path
            let swift = directory.appendingPathComponent("Catalog.swift").path
            try """
            {"type":"identify","userId":"u-1","traits":{"email":"jane@example.com","lifetime_value":12.5},"messageId":"m1","timestamp":"2026-11-01T10:00:00Z"}
            {"type":"track","userId":"u-1","event":"Order Completed","properties":{"revenue":12.5,"items":2},"messageId":"m2","timestamp":"2026-11-01T10:01:00Z"}
            {"type":"page","userId":"u-1","properties":{"path":"/"},"messageId":"m3","timestamp":"2026-11-01T10:02:00Z"}
            """.write(to: jsonl, atomically: true, encoding: .utf8)
            #expect(try await cli.run(["sources", "create", "web"], environment: env).status == 0)
            #expect(try await cli.run(["import", jsonl.path, "--source", "web"], environment: env).status == 0)

            cli.expectOneLineError(
                try await cli.run(["catalog", "show"], environment: env), containing: ["no catalog is in force"])
            let infer = try await cli.run(["catalog", "infer", "--output", catalog, "--swift", swift], environment: env)
            #expect(infer.status == 0, "\(infer.stderr)")
            #expect(infer.stdout.contains("catalog: 2 traits, 2 events, 3 properties"), "\(infer.stdout)")
            let generated = try String(contentsOfFile: swift, encoding: .utf8)
            #expect(
                generated.contains(#"public static let lifetimeValue = TributaryModel.Trait<Swift.Double>("lifetime_value")"#))
            #expect(
                generated.contains(
                    #"public static let items = TributaryModel.Property<Swift.Int>("items", event: "Order Completed")"#))

            // An edit survives --merge; without --merge the file is inferred afresh.
            let edited = try String(contentsOfFile: catalog, encoding: .utf8)
                .replacingOccurrences(of: #""type" : "integer""#, with: #""description" : "how many", "type" : "double""#)
            try edited.write(toFile: catalog, atomically: true, encoding: .utf8)
            let merge = try await cli.run(
                ["catalog", "infer", "--output", catalog, "--swift", swift, "--merge"], environment: env)
            #expect(merge.status == 0 && merge.stdout.contains("0 new since"), "\(merge.stdout)\(merge.stderr)")
            let merged = try String(contentsOfFile: catalog, encoding: .utf8)
            #expect(json(merged) != nil && json(merged) == json(edited), "nothing new, and the edit kept: \(merged)")
            #expect(try String(contentsOfFile: swift, encoding: .utf8).contains("/// how many"))

            let apply = try await cli.run(["catalog", "apply", catalog], environment: env)
            #expect(
                apply.status == 0 && apply.stdout.contains("applied the catalog in \(catalog): 4 changes"),
                "\(apply.stdout)\(apply.stderr)")
            #expect(apply.stdout.contains("+ traits.lifetime_value: double"))
            let again = try await cli.run(["catalog", "apply", catalog], environment: env)
            #expect(again.stdout.contains("is already in force"))
            let show = try await cli.run(["catalog", "show"], environment: env)
            #expect(show.status == 0 && show.stdout == merged, "the file written by infer is already canonical: \(show.stdout)")

            try #"{"traits": {"age": {"type": "int"}}}"#.write(toFile: catalog, atomically: true, encoding: .utf8)
            cli.expectOneLineError(
                try await cli.run(["catalog", "apply", catalog], environment: env),
                containing: ["\(catalog): traits.age.type: unknown type 'int'"])
            cli.expectOneLineError(
                try await cli.run(["catalog", "infer", "--output", catalog, "--merge"], environment: env),
                containing: ["\(catalog): traits.age.type: unknown type 'int'"])
            cli.expectOneLineError(
                try await cli.run(["catalog", "apply", "/nonexistent.json"], environment: env),
                containing: ["cannot read /nonexistent.json"])
            cli.expectOneLineError(
                try await cli.run(["catalog", "infer", "--sample", "0"], environment: env),
                containing: ["--sample must be at least 1"])
        }
    }

    func json(_ text: String) -> NSDictionary? { try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? NSDictionary }
}
