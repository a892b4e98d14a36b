// tributary-destinations-bench: each destination added by the activation issue, an initial sync of N rows and a 1%
// change run, against a local receiver that answers as the service does (no refusals), in one process.
//
//   swift build -c release --product tributary-destinations-bench && .build/release/tributary-destinations-bench [--rows 100000]
//
// Destinations: the shipped http definitions (examples/http-destinations: HubSpot, Mailchimp, Salesforce, Klaviyo)
// with their vendor URLs pointed at the receiver, and google_ads_customer_match. Each sync's own `rateLimit` is
// removed, so the figures are what Tributary and PostgreSQL can do; the time the same requests take at the
// service's documented rate is printed next to them (requests / documented requests per second) where the service
// documents one.
import ArgumentParser
import BenchmarkSupport
import Foundation
import LocalReceiver
import Logging
import Postgres
import Synchronization
import TributaryDestinations
import TributaryModel
import TributaryService
import TributarySyncs

@main
struct DestinationsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tributary-destinations-bench")

    @Option(help: "Rows of the source table.") var rows = 100_000
    @Option(help: "Percent of the rows changed before the second run.") var changedPercent = 1.0
    @Option(help: "Only these destinations (comma-separated names as printed).") var only: String?
    @Option(help: "Embedded data directory used when DATABASE_URL/PG* are unset.") var dataDir = ".tributary/bench-pgdata"

    /// A destination under test: its sync (from an example file or written here), and the documented request rate.
    struct Case {
        var name: String
        var sync: String
        var json: String
        var documentedRate: Double?
        var rateNote: String
    }

    func run() async throws {
        let (logger, server, files) = try await benchmarkEnvironment(dataDirectory: dataDir)
        let requests = Mutex(0)
        say("tributary-destinations-bench: \(rows) rows, \(changedPercent)% changed; \(Machine.describe())")
        try await LocalReceiver.serve(
            handler: { request in
                requests.withLock { $0 += 1 }
                return Self.answer(request)
            }
        ) { base in
            let database = try await freshDatabase("tributary_destinations_bench", on: server, files: files, logger: logger)
            let client = PostgresClient(configuration: database, options: .init(maxConnections: 4), logger: logger)
            try await client.execute(
                """
                CREATE TABLE public.customers AS
                SELECT 'p' || g AS profile_id, 'person' || g || '@example.com' AS email, 'Person' || g AS first_name,
                       'Doe' AS last_name, CASE WHEN g % 3 = 0 THEN 'pro' ELSE 'free' END AS plan,
                       (g % 1000)::numeric AS lifetime_value, '+1201555' || lpad((g % 10000)::text, 4, '0') AS phone
                FROM generate_series(1, \(rows)) AS g
                """)
            try await client.execute("ALTER TABLE public.customers ADD PRIMARY KEY (profile_id)")
            let registry = DestinationRegistry.standard()
            let environment = [
                "HUBSPOT_TOKEN": "t", "MAILCHIMP_API_KEY": "k", "SALESFORCE_CLIENT_ID": "c", "SALESFORCE_CLIENT_SECRET": "s",
                "KLAVIYO_AUTHORIZATION": "Klaviyo-API-Key k", "GOOGLE_SECRET": "s", "GOOGLE_REFRESH": "r", "GOOGLE_DEV": "d",
            ]
            let store = SyncStore(client: client, logger: logger, registry: registry)
            let runner = SyncRunner(client: client, logger: logger, registry: registry, environment: environment)
            say("")
            say(
                "| destination | run | rows sent | seconds | rows/s | requests | requests/s | at the documented rate |")
            say("|---|---|---|---|---|---|---|---|")
            for test in try cases(base) where only.map({ $0.split(separator: ",").contains(Substring(test.name)) }) ?? true {
                try await store.apply(try await store.load(Data(test.json.utf8)))
                for run in ["initial", "1% changed"] {
                    if run != "initial" {
                        try await client.execute(
                            """
                            UPDATE public.customers SET first_name = first_name || '+', phone = phone || '9'
                            WHERE abs(hashtext(profile_id)) % 10000 < \(Int(changedPercent * 100))
                            """)
                    }
                    let before = requests.withLock { $0 }
                    let clock = ContinuousClock.now
                    let report = try await runner.run(test.sync)
                    let seconds = elapsed(since: clock)
                    let sent = requests.withLock { $0 } - before
                    let atRate =
                        test.documentedRate.map { "\(Int((Double(sent) / $0).rounded())) s (\(test.rateNote))" }
                        ?? test.rateNote
                    say(
                        "| \(test.name) | \(run) | \(report.delivered) (\(report.status.rawValue)) | \(fixed(seconds)) | "
                            + "\(Int(Double(report.delivered) / max(seconds, 0.001))) | \(sent) | "
                            + "\(Int(Double(sent) / max(seconds, 0.001))) | \(atRate) |")
                }
                try await client.execute(
                    "UPDATE public.customers SET first_name = rtrim(first_name, '+'), phone = left(phone, 12)")
            }
            await client.shutdown()
        }
    }

    func cases(_ base: String) throws -> [Case] {
        func example(_ file: String) throws -> String {
            var text = try String(
                contentsOf: try ProjectFiles.locate().root.appendingPathComponent("examples/http-destinations/\(file)"),
                encoding: .utf8)
            for (vendor, path) in [
                ("https://api.hubapi.com", "hubspot"), ("https://us21.api.mailchimp.com", "mailchimp"),
                ("https://a.klaviyo.com", "klaviyo"), ("https://yourcompany.my.salesforce.com", "salesforce"),
            ] {
                text = text.replacingOccurrences(of: vendor, with: "\(base)/\(path)")
            }
            text = text.replacingOccurrences(
                of: #""source": \{[^}]*\}"#, with: #""source": {"relation": "public.customers"}"#, options: .regularExpression)
            text = text.replacingOccurrences(of: #""purposes": \[[^\]]*\],"#, with: "", options: .regularExpression)
            text = text.replacingOccurrences(of: #""rateLimit": \{[^}]*\},"#, with: "", options: .regularExpression)
            return text.replacingOccurrences(of: #""schedule": \{[^}]*\},"#, with: "", options: .regularExpression)
        }
        let google = """
            {"syncs": [{"name": "ads", "source": {"relation": "public.customers"}, "primaryKey": ["profile_id"], "mode": "audience",
              "fields": {"email": "email", "phone": "phone"}, "batchSize": 10000,
              "destination": {"type": "google_ads_customer_match", "customerId": "1234567890", "userListId": "1",
                "developerToken": "env:GOOGLE_DEV", "clientId": "c", "clientSecret": "env:GOOGLE_SECRET",
                "refreshToken": "env:GOOGLE_REFRESH", "apiURL": "\(base)/google/v26", "tokenURL": "\(base)/google/token"}}]}
            """
        return [
            Case(
                name: "hubspot (http)", sync: "vip_to_hubspot", json: try example("hubspot-contacts.json"), documentedRate: 10,
                rateNote: "100 requests / 10 s, private app"),
            Case(
                name: "mailchimp (http)", sync: "newsletter_to_mailchimp", json: try example("mailchimp-audience.json"),
                documentedRate: nil, rateNote: "no request rate; 10 concurrent connections"),
            Case(
                name: "salesforce (http)", sync: "customers_to_salesforce", json: try example("salesforce-contacts.json"),
                documentedRate: nil, rateNote: "no request rate; a daily API request allowance"),
            Case(
                name: "klaviyo (http, per row)", sync: "customers_to_klaviyo", json: try example("klaviyo-profiles.json"),
                documentedRate: 700.0 / 60, rateNote: "profile import: 700 / min steady"),
            Case(
                name: "google_ads_customer_match", sync: "ads", json: google, documentedRate: nil,
                rateNote: "no request rate; operations per job and per day"),
        ]
    }

    /// What each service answers to a request it accepts in full.
    static func answer(_ request: LocalReceiver.Request) -> LocalReceiver.Answer {
        let path = request.path
        if path.hasSuffix("/token") { return .init(body: #"{"access_token": "t", "expires_in": 3600}"#) }
        if path.hasSuffix("offlineUserDataJobs:create") {
            return .init(body: #"{"resourceName": "customers/1234567890/offlineUserDataJobs/1"}"#)
        }
        if path.hasPrefix("/salesforce/") {
            // One result per record, in order.
            let records: Int =
                if let body = try? JSONParser.parse(request.body), case .array(let items)? = body["records"] { items.count } else
                { 0 }
            return .init(
                body: "["
                    + Array(repeating: #"{"id": "003", "success": true, "errors": []}"#, count: records).joined(separator: ",")
                    + "]")
        }
        if path.hasPrefix("/klaviyo/") { return .init(status: 201, body: #"{"data": {"type": "profile", "id": "01"}}"#) }
        return .init(body: #"{"status": "COMPLETE", "errors": []}"#)
    }
}
