import Foundation
import Logging
import TributaryModel
import TributarySyncs

/// Adds rows to, and removes them from, a Google Ads Customer Match user list through the Google Ads API's
/// `OfflineUserDataJobService` (REST).
///
/// Settings: `customerId` (required, the Google Ads account, digits; dashes allowed), `userListId` (required, the
/// Customer Match list's id), `developerToken` (required; `env:…`), `clientId`, `clientSecret`, `refreshToken`
/// (required, OAuth2 credentials of a user with access to the account; `env:…`), `loginCustomerId` (the manager
/// account, when access goes through one), `emailField` / `phoneField` (default `email` / `phone`; looked up in the
/// fields, then in the key), `defaultCountryCode` (for phones written without one), `apiURL` (default
/// `https://googleads.googleapis.com/v26`), `tokenURL` (default `https://oauth2.googleapis.com/token`).
///
/// A run is one offline user data job, as Google's Customer Match guide describes it:
/// 1. `POST {apiURL}/customers/{customerId}/offlineUserDataJobs:create` with `{"job": {"type":
///    "CUSTOMER_MATCH_USER_LIST", "customerMatchUserListMetadata": {"userList":
///    "customers/{customerId}/userLists/{userListId}"}}}` (on the first batch);
/// 2. each batch: `POST {apiURL}/{job}:addOperations` with `{"enablePartialFailure": true, "operations": [{"create":
///    {"userIdentifiers": [{"hashedEmail": …}, {"hashedPhoneNumber": …}]}}, {"remove": {…}}, …]}` — `add`,
///    `upsert`, `insert` and `update` are `create`, `remove` and `delete` are `remove`; one `UserIdentifier` per
///    identifier, as the API requires; at most 10,000 rows (20,000 identifiers) per request, under the API's
///    100,000; a member whose email or phone changed first gets a `remove` of the identifiers it no longer has;
/// 3. `POST {apiURL}/{job}:run` when the run ends: only then does Google apply the job, so the destination confirms
///    at finish (a run that fails before applies nothing, and the next run sends everything again).
///
/// Identifiers are normalized as the API's `UserIdentifier` reference says — emails trimmed and lower-cased, phones
/// in E.164 (`+` and digits) — then SHA-256, lower-case hex; never sent in clear. A row with neither is rejected (`no
/// email or phone to match on`) and not sent. With partial failure enabled, a refused operation comes back in
/// `partialFailureError.details[].errors[]` with `location.fieldPathElements` naming `operations` and its index:
/// that row is rejected with the error's message; the others count. Headers: `Authorization: Bearer <token>` (from
/// the refresh token; fetched again after a 401), `developer-token`, and `login-customer-id` when set. 429 and 5xx
/// (`RESOURCE_EXHAUSTED`, `UNAVAILABLE`, `INTERNAL`) are retried with backoff; any other error fails the batch with
/// Google's message.
public struct GoogleAdsCustomerMatchDestination: Destination {
    public static let keys = [
        "type", "customerId", "userListId", "developerToken", "clientId", "clientSecret", "refreshToken", "loginCustomerId",
        "emailField", "phoneField", "defaultCountryCode", "apiURL", "tokenURL",
    ]
    public static let defaultAPIURL = "https://googleads.googleapis.com/v26"
    public static let defaultTokenURL = "https://oauth2.googleapis.com/token"
    /// Rows per `addOperations` request (each with up to two identifiers; the API takes 100,000 per request).
    public static let rowsPerRequest = 10_000

    public var maxBatchSize: Int { Self.rowsPerRequest }
    public var confirmsAtFinish: Bool { true }
    /// One Google Ads account (its id, hashed): its API quota is shared by every sync to it.
    public var account: String? { "google_ads:" + sha256Hex(Data(customerID.utf8), bytes: 8) }

    let sender: HTTPSender
    let apiURL: String
    let customerID: String
    let userList: String
    let developerToken: String
    let loginCustomerID: String?
    let oauth: OAuth2Client
    let emailField: String
    let phoneField: String
    let defaultCountryCode: String?
    let logger: Logger
    let job = JobName()

    /// The run's job resource name, created with the first batch.
    actor JobName {
        var name: String?
        func set(_ value: String) { name = value }
    }

    public static func validate(_ settings: JSONValue) throws {
        for key in ["customerId", "userListId", "developerToken", "clientId", "clientSecret", "refreshToken"] {
            try BrazeDestination.checkString(settings, key, required: true)
        }
        for key in ["loginCustomerId", "emailField", "phoneField", "apiURL", "tokenURL"] {
            try BrazeDestination.checkString(settings, key, required: false)
        }
        for key in ["customerId", "loginCustomerId"] {
            if case .string(let text)? = settings[key], !text.hasPrefix("env:"), digits(text) == nil {
                throw SyncError("destination.\(key): a Google Ads customer id, 10 digits (dashes allowed: 123-456-7890)")
            }
        }
        if case .string(let text)? = settings["userListId"], !text.hasPrefix("env:"),
            !text.allSatisfy({ $0.isASCII && $0.isNumber })
        {
            throw SyncError("destination.userListId: the Customer Match user list's id (digits)")
        }
        if let value = settings["defaultCountryCode"], value != .null {
            guard case .string(let code) = value, MetaAudienceDestination.countryCode(code) != nil else {
                throw SyncError(
                    "destination.defaultCountryCode: a country calling code as a string of 1 to 3 digits (\"1\", \"44\")")
            }
        }
        if let unknown = settings.objectKeys.first(where: { !keys.contains($0) }) {
            throw SyncError(
                "destination.\(unknown): unknown setting for google_ads_customer_match (\(keys.dropFirst().joined(separator: ", ")))"
            )
        }
    }

    /// `123-456-7890` → `1234567890`; nil unless 10 digits.
    static func digits(_ text: String) -> String? {
        let digits = text.filter { $0 != "-" }
        return digits.count == 10 && digits.allSatisfy({ $0.isASCII && $0.isNumber }) ? digits : nil
    }

    public init(_ context: DestinationContext, sender: HTTPSender = HTTPSender()) throws {
        try Self.validate(context.settings)
        guard let customer = Self.digits(try context.string("customerId")!) else {
            throw SyncError("destination.customerId: a Google Ads customer id, 10 digits")
        }
        customerID = customer
        let list = try context.string("userListId")!
        userList = "customers/\(customer)/userLists/\(list)"
        developerToken = try context.string("developerToken")!
        loginCustomerID = try context.string("loginCustomerId", required: false).flatMap(Self.digits)
        var api = try context.string("apiURL", required: false) ?? Self.defaultAPIURL
        while api.hasSuffix("/") { api.removeLast() }
        apiURL = api
        oauth = OAuth2Client(
            tokenURL: try context.string("tokenURL", required: false) ?? Self.defaultTokenURL,
            clientID: try context.string("clientId")!, clientSecret: try context.string("clientSecret")!, scope: nil,
            refreshToken: try context.string("refreshToken")!)
        emailField = try context.string("emailField", required: false) ?? "email"
        phoneField = try context.string("phoneField", required: false) ?? "phone"
        defaultCountryCode = try context.string("defaultCountryCode", required: false).flatMap(
            MetaAudienceDestination.countryCode)
        self.sender = sender
        logger = context.logger
    }

    /// The `userIdentifiers` of a change: its email and phone, normalized and hashed, or why it cannot be matched.
    func identifiers(_ change: SyncChange) -> Result<JSONValue, SyncError> {
        var identifiers: [JSONValue] = []
        if let email = change.text(emailField).flatMap(MetaAudienceDestination.normalizedEmail) {
            identifiers.append(.object([("hashedEmail", .string(MetaAudienceDestination.sha256Hex(email)))]))
        }
        if let raw = change.text(phoneField),
            case .success(let digits) = MetaAudienceDestination.normalizedPhone(
                raw, defaultCountryCode: defaultCountryCode)
        {
            // E.164: `+` and the digits with their country code.
            identifiers.append(.object([("hashedPhoneNumber", .string(MetaAudienceDestination.sha256Hex("+" + digits)))]))
        }
        guard !identifiers.isEmpty else { return .failure(SyncError("no email or phone to match on")) }
        return .success(.array(identifiers))
    }

    public func send(_ batch: [SyncChange]) async throws -> [ChangeResult] {
        var results = [ChangeResult](repeating: .delivered, count: batch.count)
        // Identifiers a changed member no longer has (an old email's hash) are removed first: operations of a request
        // are applied in order. Their position is -1: a refusal of one of them rejects no row.
        var operations: [JSONValue] = []
        var positions: [Int] = []
        var creates: [(Int, JSONValue)] = []
        for (index, change) in batch.enumerated() {
            switch identifiers(change) {
            case .failure(let problem): results[index] = .rejected(problem.description)
            case .success(let identifiers):
                let verb = change.operation == .remove || change.operation == .delete ? "remove" : "create"
                let operation = JSONValue.object([(verb, .object([("userIdentifiers", identifiers)]))])
                if verb == "create", let previous = change.previousFields {
                    var before = change
                    before.fields = previous
                    if case .success(.array(let old)) = self.identifiers(before), case .array(let now) = identifiers {
                        let stale = old.filter { !now.contains($0) }
                        if !stale.isEmpty {
                            operations.append(.object([("remove", .object([("userIdentifiers", .array(stale))]))]))
                            positions.append(-1)
                        }
                    }
                }
                creates.append((index, operation))
            }
        }
        for (index, operation) in creates {
            operations.append(operation)
            positions.append(index)
        }
        guard !operations.isEmpty else { return results }
        let name = try await jobName()
        let answer = try await call(
            "\(apiURL)/\(name):addOperations",
            .object([("enablePartialFailure", .bool(true)), ("operations", .array(operations))]))
        for (operation, reason) in Self.refusedOperations(answer) where positions.indices.contains(operation) {
            if positions[operation] >= 0 { results[positions[operation]] = .rejected(reason) }
        }
        return results
    }

    /// Runs the job: Google applies its operations now (nothing to do when no batch was sent).
    public func finish() async throws {
        guard let name = await job.name else { return }
        _ = try await call("\(apiURL)/\(name):run", .object([]))
    }

    func jobName() async throws -> String {
        if let name = await job.name { return name }
        let answer = try await call(
            "\(apiURL)/customers/\(customerID)/offlineUserDataJobs:create",
            .object([
                (
                    "job",
                    .object([
                        ("type", .string("CUSTOMER_MATCH_USER_LIST")),
                        ("customerMatchUserListMetadata", .object([("userList", .string(userList))])),
                    ])
                )
            ]))
        guard case .string(let name)? = answer["resourceName"] else {
            throw DestinationError("Google Ads: creating the job answered no resourceName", retryable: false)
        }
        await job.set(name)
        return name
    }

    /// One POST with the API's headers; a 401 fetches a new access token once.
    func call(_ url: String, _ body: JSONValue) async throws -> JSONValue {
        var bytes: [UInt8] = []
        body.write(to: &bytes)
        var refreshed = false
        while true {
            var headers = [
                ("Content-Type", "application/json"), ("developer-token", developerToken),
                ("Authorization", "Bearer " + (try await oauth.token(sender: sender))),
                ("User-Agent", "tributary/\(Tributary.version)"),
            ]
            if let loginCustomerID { headers.append(("login-customer-id", loginCustomerID)) }
            let response = try await sender.send("POST", url, headers: headers, body: bytes)
            if response.status == 401 && !refreshed {
                await oauth.forget()
                refreshed = true
                continue
            }
            let answer = (try? JSONParser.parse(response.body)) ?? .null
            guard (200..<300).contains(response.status) else {
                throw DestinationError("Google Ads: HTTP \(response.status) \(Self.message(answer, response))", retryable: false)
            }
            return answer
        }
    }

    /// `{"error": {"message", "status", "details": [{"errors": [{"message"}]}]}}` → the most specific message.
    static func message(_ answer: JSONValue, _ response: HTTPSender.Response) -> String {
        if case .array(let details)? = answer["error"]?["details"] {
            for detail in details {
                if case .array(let errors)? = detail["errors"], case .string(let text)? = errors.first?["message"] { return text }
            }
        }
        if case .string(let text)? = answer["error"]?["message"] { return text }
        return String(response.text.prefix(200))
    }

    /// Operation index → message, from `partialFailureError`.
    static func refusedOperations(_ answer: JSONValue) -> [(Int, String)] {
        guard case .array(let details)? = answer["partialFailureError"]?["details"] else { return [] }
        var refused: [(Int, String)] = []
        for detail in details {
            guard case .array(let errors)? = detail["errors"] else { continue }
            for error in errors {
                guard case .array(let path)? = error["location"]?["fieldPathElements"],
                    let element = path.first(where: { $0["fieldName"] == .string("operations") }),
                    case .number(let text)? = element["index"], let index = Int(text)
                else { continue }
                let message = if case .string(let text)? = error["message"] { text } else { "refused by Google Ads" }
                refused.append((index, message))
            }
        }
        return refused
    }
}
