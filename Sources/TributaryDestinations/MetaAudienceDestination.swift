import Crypto
import Foundation
import Logging
import TributaryModel
import TributarySyncs

/// Adds rows to, and removes them from, a Meta (Facebook) customer-file Custom Audience through the Marketing API.
///
/// Settings: `audienceId` (required, the Custom Audience ID), `accessToken` (required, a token with `ads_management`;
/// usually `env:META_ACCESS_TOKEN`), `graphURL` (default `https://graph.facebook.com/v25.0`; the Graph API base with
/// its version), `emailField` / `phoneField` (the fields holding them; default `email` / `phone`; looked up in the
/// fields, then in the key), `defaultCountryCode` (digits, e.g. `"1"` or `"44"`: the country code of phone numbers
/// written without one; without it such numbers are not used).
///
/// Requests follow Meta's guide and reference
/// (https://developers.facebook.com/docs/marketing-api/audiences/guides/custom-audiences/ and
/// https://developers.facebook.com/docs/marketing-api/reference/custom-audience/users/): `add`, `upsert`, `insert`
/// and `update` are `POST /{audience_id}/users`; `remove` and `delete` are `DELETE /{audience_id}/users`. The body is
/// form-encoded, as in Meta's examples (`-F payload=… -F access_token=…`), so the token never appears in a URL:
/// - `payload`: a multi-key payload `{"schema": ["EMAIL", "PHONE"], "data": [["<sha256 email>", "<sha256 phone>"], …]}`
///   ("One can also pass an array of multiple keys for multi-key match"; `EMAIL_SHA256` / `PHONE_SHA256` are the
///   single-key schema names, an array takes the key names). A key a row lacks is sent as `""` ("In case a key is
///   unknown, it should be left blank").
/// - `session`: `{"session_id": <random>, "batch_seq": 1, "last_batch_flag": true, "estimated_num_total": n}`: each
///   request is a complete session of one batch, so `num_received` ("Total number of users received in this session
///   so far") counts exactly the rows of that request, and a retried request starts a fresh session.
/// - `access_token`.
///
/// Normalization, from Meta's "Hashing and normalization" table: `EMAIL` "Trim leading and trailing white space, and
/// convert all characters to lowercase"; `PHONE` "Remove symbols, letters, and any leading zeroes. You should prefix
/// the country code if the `COUNTRY` field is not specified" (this destination sends no `COUNTRY`, so the number must
/// carry its country code). Then SHA-256, lower-case hex. See ``normalizedEmail(_:)`` and
/// ``normalizedPhone(_:defaultCountryCode:)`` for what counts as usable. A row with neither a usable email nor a
/// usable phone is rejected (`no email or phone to match on`) and not sent. A member added again with changed fields
/// (``SyncChange/previousFields``) first has the hashes it no longer has removed (a DELETE before the batch's adds).
///
/// Answers: `{"audience_id", "session_id", "num_received", "num_invalid_entries", "invalid_entry_samples"}`. When
/// `num_received` differs from the rows sent the whole batch fails (not retried: Meta did not take what was sent, and
/// sending it again would not change that). Meta reports invalid entries only as "Up to 100 samples": a row whose
/// hash appears in `invalid_entry_samples` (as an array element, or a key or value of the map) is rejected, every
/// other row counts as delivered; when `num_invalid_entries` is larger than the rows identified that way, a warning
/// is logged (the rest cannot be told apart). Graph errors `{"error": {"message", "type", "code", "error_subcode",
/// "fbtrace_id"}}` (https://developers.facebook.com/docs/graph-api/guides/error-handling/): codes 1, 2 (temporary),
/// 4, 17, 32, 341, 613 and 80000–80014 (throttling and rate limits, 80003 being the custom audience one) and any
/// error marked `is_transient` are retried; 190 and 102 (access token) and everything else fail the batch. 429 and
/// 5xx are retried by ``HTTPSender``. Messages never include the access token.
public struct MetaAudienceDestination: Destination {
    /// One Meta access token (hashed): the Marketing API's limits are per app and ad account behind it.
    public var account: String? { "meta:" + TributaryModel.sha256Hex(Data(accessToken.utf8), bytes: 8) }
    let sender: HTTPSender
    let usersURL: String
    let accessToken: String
    let emailField: String
    let phoneField: String
    let defaultCountryCode: String?
    let logger: Logger

    public static let defaultGraphURL = "https://graph.facebook.com/v25.0"
    /// "You can add an unlimited number of records to an audience, but only up to 10000 at a time."
    public static let rowsPerRequest = 10_000
    /// The multi-key schema sent with every request.
    public static let schema = ["EMAIL", "PHONE"]

    public var maxBatchSize: Int { Self.rowsPerRequest }

    public static let keys = ["type", "audienceId", "accessToken", "graphURL", "emailField", "phoneField", "defaultCountryCode"]

    public static func validate(_ settings: JSONValue) throws {
        try BrazeDestination.checkString(settings, "audienceId", required: true)
        try BrazeDestination.checkString(settings, "accessToken", required: true)
        if let value = settings["graphURL"], value != .null {
            guard case .string(let url) = value, url.hasPrefix("https://") || url.hasPrefix("http://") || url.hasPrefix("env:")
            else {
                throw SyncError(
                    "destination.graphURL: must be an https:// URL, the Graph API base with its version (\(defaultGraphURL))")
            }
        }
        try BrazeDestination.checkString(settings, "emailField", required: false)
        try BrazeDestination.checkString(settings, "phoneField", required: false)
        if let value = settings["defaultCountryCode"], value != .null {
            guard case .string(let code) = value, countryCode(code) != nil else {
                throw SyncError(
                    "destination.defaultCountryCode: must be a country calling code as a string of 1 to 3 digits (\"1\", \"44\")")
            }
        }
        if let unknown = settings.objectKeys.first(where: { !keys.contains($0) }) {
            throw SyncError(
                "destination.\(unknown): unknown setting for meta_audience (\(keys.dropFirst().joined(separator: ", ")))")
        }
    }

    /// `"44"` or `"+44"` → `"44"`; nil unless 1–3 digits not starting with 0.
    static func countryCode(_ text: String) -> String? {
        let digits = text.hasPrefix("+") ? String(text.dropFirst()) : text
        guard (1...3).contains(digits.count), digits.allSatisfy({ $0.isASCII && $0.isNumber }), !digits.hasPrefix("0") else {
            return nil
        }
        return digits
    }

    public init(_ context: DestinationContext, sender: HTTPSender = HTTPSender()) throws {
        try Self.validate(context.settings)
        let audienceID = try context.string("audienceId")!
        guard !audienceID.isEmpty, audienceID.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
            throw SyncError("destination.audienceId: must be the Custom Audience ID (digits)")
        }
        var graphURL = try context.string("graphURL", required: false) ?? Self.defaultGraphURL
        while graphURL.hasSuffix("/") { graphURL.removeLast() }
        guard graphURL.hasPrefix("https://") || graphURL.hasPrefix("http://") else {
            throw SyncError("destination.graphURL: must be an https:// URL, the Graph API base with its version")
        }
        usersURL = "\(graphURL)/\(audienceID)/users"
        accessToken = try context.string("accessToken")!
        emailField = try context.string("emailField", required: false) ?? "email"
        phoneField = try context.string("phoneField", required: false) ?? "phone"
        defaultCountryCode = try context.string("defaultCountryCode", required: false).flatMap(Self.countryCode)
        self.sender = sender
        logger = context.logger
    }

    // MARK: Normalization

    /// Meta's `EMAIL` rule: "Trim leading and trailing white space, and convert all characters to lowercase." Nil
    /// when the result is not an address at all (no `@` with text on both sides, or white space inside).
    public static func normalizedEmail(_ raw: String) -> String? {
        let email = raw.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        guard let at = email.firstIndex(of: "@"), at != email.startIndex, email.index(after: at) != email.endIndex,
            !email.contains(where: \.isWhitespace)
        else { return nil }
        return email
    }

    /// Why a phone number was not used.
    public enum PhoneProblem: Error, Equatable, Sendable {
        /// Written without a country code (no leading `+` or `00`) and no `defaultCountryCode` is set.
        case noCountryCode
        /// Fewer than 7 or more than 15 digits once normalized (E.164 numbers have at most 15).
        case invalid
    }

    /// Meta's `PHONE` rule: "Remove symbols, letters, and any leading zeroes", with the country code included (no
    /// `+`). A number written in international form (`+1 (555) 987-6543`, `0044 7700 900123`) carries its country
    /// code: its digits are kept and leading zeros dropped (`15559876543`, `447700900123`). Any other number is
    /// national: with `defaultCountryCode` its leading zeros (the trunk prefix) are dropped and the code prefixed
    /// (`07700 900123` with `44` → `447700900123`); without it the number is not used (``PhoneProblem/noCountryCode``),
    /// since hashing it without a country code could never match.
    public static func normalizedPhone(_ raw: String, defaultCountryCode: String?) -> Result<String, PhoneProblem> {
        let trimmed = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        let international = trimmed.hasPrefix("+") || trimmed.hasPrefix("00")
        var digits = String(trimmed.unicodeScalars.filter { $0.isASCII && ("0"..."9").contains($0) }.map(Character.init))
        while digits.hasPrefix("0") { digits.removeFirst() }
        if !international {
            guard let defaultCountryCode else { return .failure(.noCountryCode) }
            digits = defaultCountryCode + digits
        }
        guard (7...15).contains(digits.count) else { return .failure(.invalid) }
        return .success(digits)
    }

    /// SHA-256 as lower-case hex ("using lowercase for A through F").
    public static func sha256Hex(_ text: String) -> String {
        SHA256.hash(data: Array(text.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The hashed `[EMAIL, PHONE]` row of a change, or why it cannot be matched.
    func row(for change: SyncChange) -> Result<[String], SyncError> {
        let email = change.text(emailField).flatMap(Self.normalizedEmail)
        var phone: String?
        var phoneProblem: PhoneProblem?
        if let raw = change.text(phoneField), !raw.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            switch Self.normalizedPhone(raw, defaultCountryCode: defaultCountryCode) {
            case .success(let digits): phone = digits
            case .failure(let problem): phoneProblem = problem
            }
        }
        guard email != nil || phone != nil else {
            if phoneProblem == .noCountryCode {
                return .failure(
                    SyncError(
                        "no email or phone to match on (the phone has no country code: write it as +<country code>… or set destination.defaultCountryCode)"
                    ))
            }
            return .failure(SyncError("no email or phone to match on"))
        }
        return .success([email.map(Self.sha256Hex) ?? "", phone.map(Self.sha256Hex) ?? ""])
    }

    // MARK: Sending

    public func send(_ batch: [SyncChange]) async throws -> [ChangeResult] {
        var results = [ChangeResult](repeating: .delivered, count: batch.count)
        // Consecutive runs of adds (POST) and removals (DELETE), in batch order, at most 10,000 rows each.
        var requests: [(method: String, rows: [(index: Int, hashes: [String])])] = []
        // Identifiers a changed member no longer has (an old email's hash): removed before the adds.
        var stale: [[String]] = []
        for (index, change) in batch.enumerated() {
            switch row(for: change) {
            case .failure(let problem):
                results[index] = .rejected(problem.description)
            case .success(let hashes):
                let method = [.remove, .delete].contains(change.operation) ? "DELETE" : "POST"
                if method == "POST", let old = staleHashes(change, now: hashes) { stale.append(old) }
                if let last = requests.last, last.method == method, last.rows.count < Self.rowsPerRequest {
                    requests[requests.count - 1].rows.append((index, hashes))
                } else {
                    requests.append((method, [(index, hashes)]))
                }
            }
        }
        for start in stride(from: 0, to: stale.count, by: Self.rowsPerRequest) {
            _ = try await exchange("DELETE", Array(stale[start..<min(stale.count, start + Self.rowsPerRequest)]))
        }
        for request in requests {
            let rejected = try await exchange(request.method, request.rows.map(\.hashes))
            for (position, reason) in rejected { results[request.rows[position].index] = .rejected(reason) }
        }
        return results
    }

    /// The `[EMAIL, PHONE]` hashes a member had when last delivered and no longer has (blank where unchanged), or
    /// nil when nothing it had changed.
    func staleHashes(_ change: SyncChange, now hashes: [String]) -> [String]? {
        guard let previous = change.previousFields else { return nil }
        var before = change
        before.fields = previous
        guard case .success(let old) = row(for: before) else { return nil }
        let stale = zip(old, hashes).map { old, new in old.isEmpty || old == new ? "" : old }
        return stale.allSatisfy(\.isEmpty) ? nil : stale
    }

    /// Sends one request; returns the rejected rows by position in the request.
    func exchange(_ method: String, _ rows: [[String]]) async throws -> [Int: String] {
        let payload = JSONValue.object([
            ("schema", .array(Self.schema.map(JSONValue.string))),
            ("data", .array(rows.map { .array($0.map(JSONValue.string)) })),
        ])
        let session = JSONValue.object([
            ("session_id", .number(String(Int64.random(in: 1...Int64.max)))), ("batch_seq", .number("1")),
            ("last_batch_flag", .bool(true)), ("estimated_num_total", .number(String(rows.count))),
        ])
        let body = HTTPSender.formEncoded([
            ("payload", payload.serialized), ("session", session.serialized), ("access_token", accessToken),
        ])
        let headers = [("Content-Type", "application/x-www-form-urlencoded"), ("User-Agent", "tributary/\(Tributary.version)")]
        let response: HTTPSender.Response
        do {
            response = try await sender.send(method, usersURL, headers: headers, body: body)
        } catch let error as DestinationError {
            throw DestinationError(redacted(error.description), retryable: error.retryable, retryAfter: error.retryAfter)
        }
        let answer = response.body.isEmpty ? nil : try? JSONParser.parse(response.body)
        guard (200..<300).contains(response.status) else { throw graphError(method, response, answer) }
        guard let answer, case .number(let receivedText)? = answer["num_received"], let received = Int(receivedText) else {
            throw DestinationError(
                "\(method) \(usersURL): HTTP \(response.status) without num_received: \(redacted(String(response.text.prefix(200))))",
                retryable: false)
        }
        guard received == rows.count else {
            throw DestinationError(
                "\(method) \(usersURL): Meta received \(received) of the \(rows.count) rows sent (num_received), so the batch is not "
                    + "counted as delivered; it is tried again on the next run", retryable: false)
        }
        // Invalid entries, as far as Meta's samples name them.
        var samples: [(text: String, reason: String?)] = []
        switch answer["invalid_entry_samples"] {
        case .array(let items)?:
            for case .string(let text) in items { samples.append((text, nil)) }
        case .object(let members)?:
            for (name, value) in members {
                if case .string(let text) = value {
                    samples.append((name, text)); samples.append((text, nil))
                } else {
                    samples.append((name, nil))
                }
            }
        default: break
        }
        var rejected: [Int: String] = [:]
        if !samples.isEmpty {
            for (position, hashes) in rows.enumerated() {
                for hash in hashes where !hash.isEmpty {
                    if let sample = samples.first(where: { $0.text.contains(hash) }) {
                        rejected[position] =
                            "Meta reported this entry as invalid"
                            + (sample.reason.map { ": \(redacted(String($0.prefix(200))))" } ?? " (invalid_entry_samples)")
                        break
                    }
                }
            }
        }
        if case .number(let invalidText)? = answer["num_invalid_entries"], let invalid = Int(invalidText),
            invalid > rejected.count
        {
            logger.warning(
                """
                meta_audience: \(method) \(usersURL): Meta reported \(invalid) invalid entries, \(rejected.count) of them named by \
                invalid_entry_samples; the others cannot be told apart and count as delivered
                """)
        }
        return rejected
    }

    /// Graph API error codes worth retrying: temporary (1, 2), throttling and rate limits (4, 17, 32, 341, 613, 80000–80014).
    static func isRetryable(code: Int) -> Bool {
        [1, 2, 4, 17, 32, 341, 613].contains(code) || (80000...80014).contains(code)
    }

    func graphError(_ method: String, _ response: HTTPSender.Response, _ answer: JSONValue?) -> DestinationError {
        let prefix = "\(method) \(usersURL): HTTP \(response.status)"
        guard let error = answer?["error"], case .number(let codeText)? = error["code"], let code = Int(codeText) else {
            return DestinationError(redacted("\(prefix): \(response.text.prefix(200))"), retryable: false)
        }
        func string(_ key: String) -> String? { if case .string(let text)? = error[key] { text } else { nil } }
        let subcode: String = if case .number(let text)? = error["error_subcode"] { "/\(text)" } else { "" }
        var detail = "Graph error \(code)\(subcode)"
        if let type = string("type") { detail += " (\(type))" }
        detail += ": \(string("message") ?? "no message")"
        if let user = string("error_user_msg") { detail += " — \(user)" }
        if let trace = string("fbtrace_id") { detail += " [fbtrace_id \(trace)]" }
        let retryAfter = response.headers.first { $0.0.lowercased() == "retry-after" }.flatMap { HTTPSender.retryAfter($0.1) }
        if code == 190 || code == 102 {
            return DestinationError(
                redacted("\(prefix): Meta rejected the access token (\(detail)); renew destination.accessToken"), retryable: false
            )
        }
        let transient = error["is_transient"] == .bool(true)
        return DestinationError(
            redacted("\(prefix): \(detail)"), retryable: transient || Self.isRetryable(code: code), retryAfter: retryAfter)
    }

    /// The text without the access token, should Meta ever echo it.
    func redacted(_ text: String) -> String {
        accessToken.isEmpty ? text : text.replacingOccurrences(of: accessToken, with: "<accessToken>")
    }
}
