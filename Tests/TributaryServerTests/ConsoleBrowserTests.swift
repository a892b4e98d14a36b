import AsyncHTTPClient
import Foundation
import HummingbirdTesting
import NIOCore
import NIOHTTP1
import Postgres
import PostgresTesting
import Testing
import TributaryCollection
import TributaryModel

/// The console in a real headless browser (Chromium driven by chromedriver over WebDriver): sign in through the
/// form, see the overview, watch an event carrying markup arrive on the live screen as text, and no script runs.
///
/// Needs `chromium` and `chromium-driver` (Debian packages; `.ci/run` installs them). Without them the test is
/// skipped, unless `TRIBUTARY_REQUIRE_BROWSER=1` (set by CI) makes their absence a failure.
@Suite struct ConsoleBrowserTests {
    static let driverPath = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    static let browserPath = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    static var required: Bool { ProcessInfo.processInfo.environment["TRIBUTARY_REQUIRE_BROWSER"] == "1" }
    /// Where the screenshots go.
    static let artifacts = TestDatabase.packageRoot.appendingPathComponent(".build/console-screenshots")

    @Test(.enabled(if: (driverPath != nil && browserPath != nil) || required))
    func signInAndWatchLiveEventsInARealBrowser() async throws {
        let driver = try #require(Self.driverPath, "chromedriver is not installed (apt-get install chromium-driver)")
        let browser = try #require(Self.browserPath, "chromium is not installed (apt-get install chromium)")
        try await ConsoleTests().withConsole { http, setup in
            let port = try #require(http.port)
            let base = "http://127.0.0.1:\(port)"
            let session = try await WebDriver.start(driver: driver, browser: browser)
            do {
                try await session.go(base + "/console/login")
                try await session.type(setup.reader, into: "input[name=token]")
                try await session.click("button[type=submit]")
                #expect(try await session.currentURL() == base + "/console")
                #expect(try await session.source().contains("<h1>Overview</h1>"))

                // Every page, its DOM checked, a screenshot of each kept as an artifact (.build/console-screenshots).
                let profile = "/console/profiles/\(setup.profile.uuidString.lowercased())"
                for (path, heading) in [
                    ("/console", "Overview"), ("/console/profiles", "Profiles"), (profile, "Profile"),
                    ("/console/segments", "Segments"), ("/console/segments/pro_users", "Segment"), ("/console/syncs", "Syncs"),
                    ("/console/syncs/crm", "Sync"), ("/console/governance", "Governance"),
                ] {
                    try await session.go(base + path)
                    let dom = try await session.source()
                    #expect(dom.contains("<h1>\(heading)"), "\(path): \(dom.prefix(300))")
                    #expect(!dom.contains("<script>alert"), "\(path)")
                    try await session.screenshot(
                        to: Self.artifacts.appendingPathComponent(
                            (path.dropFirst().replacingOccurrences(of: "/", with: "_")) + ".png"))
                }
                try await session.go(base + "/console/live?type=track")
                #expect(try await session.source().contains("id=\"live\""))
                // An event whose name is markup arrives while the page is open; it must show as text.
                let writer = EventWriter(client: setup.client, logger: TestDatabase.logger)
                let event = IncomingEvent(
                    messageID: "live-1", type: .track, event: "<img src=x onerror=alert(1)>Live order", name: nil,
                    userID: "u-1", anonymousID: nil, groupID: nil, previousID: nil, timestamp: Date(), originalTimestamp: nil,
                    sentAt: nil, receivedAt: Date(), properties: #"{"total": 12.5}"#, traits: "{}", context: "{}",
                    integrations: "{}")
                let source = try await setup.client.query("SELECT source_id FROM cdp.sources").scalar(String.self)
                _ = try await writer.write([event], sourceID: source)
                var arrived = false
                for _ in 0..<40 where !arrived {
                    try await Task.sleep(for: .milliseconds(250))
                    arrived = try await session.source().contains("&lt;img src=x onerror=alert(1)&gt;Live order")
                }
                #expect(arrived, "the event did not appear on the live screen within 10 s")
                #expect(try await session.alertOpen() == false, "a script ran")
                #expect(try await session.count("table#live img") == 0)
            } catch {
                await session.stop()
                throw error
            }
            await session.stop()
        }
    }
}

/// Just enough of the W3C WebDriver protocol (JSON over HTTP) to drive chromedriver.
struct WebDriver {
    let process: Process
    let endpoint: String
    let session: String

    static func start(driver: String, browser: String) async throws -> WebDriver {
        let port = Int.random(in: 20_000..<60_000)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: driver)
        process.arguments = ["--port=\(port)"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let endpoint = "http://127.0.0.1:\(port)"
        var ready = false
        var problem = "no answer"
        for _ in 0..<100 where !ready {
            try await Task.sleep(for: .milliseconds(100))
            do {
                let status = try await call("GET", endpoint + "/status")
                ready = status["value"]?["ready"] == .bool(true)
                problem = status.serialized
            } catch {
                problem = "\(error)"
            }
        }
        guard ready else {
            kill(process)
            throw WebDriverError("chromedriver did not start on port \(port): \(problem.prefix(300))")
        }
        let capabilities = JSONValue.object([
            (
                "capabilities",
                .object([
                    (
                        "alwaysMatch",
                        .object([
                            ("browserName", .string("chrome")),
                            (
                                "goog:chromeOptions",
                                .object([
                                    ("binary", .string(browser)),
                                    (
                                        "args",
                                        .array(
                                            [
                                                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                                "--window-size=1200,900",
                                            ].map {
                                                .string($0)
                                            })
                                    ),
                                ])
                            ),
                        ])
                    )
                ])
            )
        ])
        let created = try await call("POST", endpoint + "/session", capabilities)
        guard case .string(let session)? = created["value"]?["sessionId"] else {
            kill(process)
            throw WebDriverError("no session: \(created.serialized.prefix(500))")
        }
        return WebDriver(process: process, endpoint: endpoint, session: session)
    }

    var base: String { endpoint + "/session/" + session }

    func go(_ url: String) async throws { _ = try await Self.call("POST", base + "/url", .object([("url", .string(url))])) }

    func currentURL() async throws -> String { try await Self.call("GET", base + "/url")["value"]?.plainText ?? "" }

    func source() async throws -> String { try await Self.call("GET", base + "/source")["value"]?.plainText ?? "" }

    func element(_ css: String) async throws -> String {
        let found = try await Self.call(
            "POST", base + "/element", .object([("using", .string("css selector")), ("value", .string(css))]))
        guard case .object(let members)? = found["value"], let id = members.first?.1.plainText, !id.isEmpty else {
            throw WebDriverError("no element '\(css)': \(found.serialized.prefix(300))")
        }
        return id
    }

    func count(_ css: String) async throws -> Int {
        let found = try await Self.call(
            "POST", base + "/elements", .object([("using", .string("css selector")), ("value", .string(css))]))
        if case .array(let items)? = found["value"] { return items.count }
        return 0
    }

    func type(_ text: String, into css: String) async throws {
        let id = try await element(css)
        _ = try await Self.call("POST", base + "/element/\(id)/value", .object([("text", .string(text))]))
    }

    func click(_ css: String) async throws {
        let id = try await element(css)
        _ = try await Self.call("POST", base + "/element/\(id)/click", .object([]))
    }

    /// Saves a PNG of the viewport.
    func screenshot(to file: URL) async throws {
        let answer = try await Self.call("GET", base + "/screenshot")
        guard case .string(let encoded)? = answer["value"], let data = Data(base64Encoded: encoded) else {
            throw WebDriverError("no screenshot: \(answer.serialized.prefix(200))")
        }
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: file)
    }

    /// Whether a JavaScript dialog (alert) is open.
    func alertOpen() async throws -> Bool {
        let answer = try await Self.call("GET", base + "/alert/text")
        return answer["value"]?["error"] == nil
    }

    func stop() async {
        _ = try? await Self.call("DELETE", base)
        Self.kill(process)
    }

    /// chromedriver does not exit on SIGTERM.
    static func kill(_ process: Process) {
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    static func call(_ method: String, _ url: String, _ body: JSONValue? = nil) async throws -> JSONValue {
        var request = HTTPClientRequest(url: url)
        request.method = .init(rawValue: method)
        if let body {
            request.body = .bytes(ByteBuffer(string: body.serialized))
            request.headers.add(name: "Content-Type", value: "application/json")
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let data = try await response.body.collect(upTo: 64 * 1024 * 1024)
        return try JSONParser.parse(Array(buffer: data))
    }
}

struct WebDriverError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
