import Foundation
import LocalReceiver
import Synchronization
import Testing
@testable import TributaryDestinations
@testable import TributaryModel
@testable import TributarySyncs

/// Google Ads Customer Match against a local receiver that checks requests the way the API reference documents
/// them: a job per run (create, addOperations per batch, run at the end), hashed and normalized identifiers, one
/// identifier per `UserIdentifier`, partial failures rejecting their rows, OAuth2 refresh-token grant.
@Suite struct GoogleAdsDestinationTests {
    typealias M = Marketing

    static func destination(_ base: String, runID: Int64 = 7) throws -> GoogleAdsCustomerMatchDestination {
        try GoogleAdsCustomerMatchDestination(
            DestinationContext(
                sync: "ads", runID: runID,
                settings: try M.json(
                    """
                    {"type": "google_ads_customer_match", "customerId": "123-456-7890", "userListId": "555",
                     "developerToken": "env:DEV_TOKEN", "clientId": "cid", "clientSecret": "env:CLIENT_SECRET",
                     "refreshToken": "env:REFRESH_TOKEN", "loginCustomerId": "999-888-7777",
                     "apiURL": "\(base)/v26", "tokenURL": "\(base)/token", "defaultCountryCode": "44"}
                    """),
                environment: ["DEV_TOKEN": "dev-1", "CLIENT_SECRET": "shh", "REFRESH_TOKEN": "r-1"]))
    }

    @Test func aRunIsOneJobWithHashedIdentifiersAndPartialFailures() async throws {
        let created = Mutex(0)
        let receiver = TestReceiver { request in
            switch request.path {
            case "/token": return .init(body: #"{"access_token": "ya29.token", "expires_in": 3599, "token_type": "Bearer"}"#)
            case "/v26/customers/1234567890/offlineUserDataJobs:create":
                let job = created.withLock {
                    $0 += 1; return $0
                }
                return .init(body: #"{"resourceName": "customers/1234567890/offlineUserDataJobs/77\#(job)"}"#)
            case let path where path.hasSuffix(":addOperations"):
                // The second operation of the first request is refused, as the API reports a partial failure.
                return .init(
                    body: """
                        {"partialFailureError": {"code": 3, "message": "Multiple errors in 'details'.",
                          "details": [{"@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure",
                            "errors": [{"errorCode": {"offlineUserDataJobError": "INVALID_SHA256_FORMAT"},
                                        "message": "The SHA256 encoded value is malformed.",
                                        "location": {"fieldPathElements": [{"fieldName": "operations", "index": 1},
                                                                           {"fieldName": "create"}]}}]}]}}
                        """)
            default: return .init(body: "{}")
            }
        }
        try await receiver.serve { base in
            let destination = try Self.destination(base)
            #expect(destination.confirmsAtFinish && destination.maxBatchSize == 10_000)
            let results = try await destination.send([
                try M.change(
                    .add, #"{"profile_id": "p1"}"#, #"{"email": " Jane.Doe@Example.COM ", "phone": "+1 (555) 987-6543"}"#),
                try M.change(.add, #"{"profile_id": "p2"}"#, #"{"email": "mary@example.com"}"#),
                try M.change(.add, #"{"profile_id": "p3"}"#, #"{"email": "not an email"}"#),
                try M.change(.remove, #"{"profile_id": "p4"}"#, #"{"phone": "07700 900123"}"#),
            ])
            #expect(
                results == [
                    .delivered, .rejected("The SHA256 encoded value is malformed."), .rejected("no email or phone to match on"),
                    .delivered,
                ])
            _ = try await destination.send([try M.change(.add, #"{"profile_id": "p5"}"#, #"{"email": "x@example.com"}"#)])
            try await destination.finish()
        }
        let requests = await receiver.requests
        #expect(
            requests.map(\.path) == [
                "/token", "/v26/customers/1234567890/offlineUserDataJobs:create",
                "/v26/customers/1234567890/offlineUserDataJobs/771:addOperations",
                "/v26/customers/1234567890/offlineUserDataJobs/771:addOperations",
                "/v26/customers/1234567890/offlineUserDataJobs/771:run",
            ], "one job for the run, the token fetched once")
        #expect(
            M.form(requests[0].text) == [
                "grant_type": "refresh_token", "refresh_token": "r-1", "client_id": "cid", "client_secret": "shh",
            ])
        for request in requests.dropFirst() {
            #expect(request.method == "POST" && request.header("Authorization") == "Bearer ya29.token")
            #expect(request.header("developer-token") == "dev-1" && request.header("login-customer-id") == "9998887777")
        }
        #expect(
            try M.json(requests[1].text)
                == M.json(
                    #"{"job": {"type": "CUSTOMER_MATCH_USER_LIST", "customerMatchUserListMetadata": {"userList": "customers/1234567890/userLists/555"}}}"#
                ))
        #expect(
            try M.json(requests[2].text)
                == M.json(
                    """
                    {"enablePartialFailure": true, "operations": [
                      {"create": {"userIdentifiers": [{"hashedEmail": "\(M.sha256("jane.doe@example.com"))"},
                                                      {"hashedPhoneNumber": "\(M.sha256("+15559876543"))"}]}},
                      {"create": {"userIdentifiers": [{"hashedEmail": "\(M.sha256("mary@example.com"))"}]}},
                      {"remove": {"userIdentifiers": [{"hashedPhoneNumber": "\(M.sha256("+447700900123"))"}]}}
                    ]}
                    """))
        #expect(!requests.contains { $0.text.contains("jane") || $0.text.contains("mary@") }, "never in clear")
    }

    /// A member whose email changed: a `remove` of the old email's hash comes before the `create` in the same
    /// request; a refusal of that removal rejects no row.
    @Test func aChangedEmailRemovesTheOldHashFirst() async throws {
        let receiver = TestReceiver { request in
            switch request.path {
            case "/token": return .init(body: #"{"access_token": "t", "expires_in": 3600}"#)
            case "/v26/customers/1234567890/offlineUserDataJobs:create":
                return .init(body: #"{"resourceName": "customers/1234567890/offlineUserDataJobs/9"}"#)
            default:
                return .init(
                    body:
                        #"{"partialFailureError": {"details": [{"errors": [{"message": "not in list", "location": {"fieldPathElements": [{"fieldName": "operations", "index": 0}]}}]}]}}"#
                )
            }
        }
        try await receiver.serve { base in
            var change = try M.change(
                .add, #"{"profile_id": "p1"}"#, #"{"email": "new@example.com", "phone": "+1 555 987 6543"}"#)
            change.previousFields = try M.json(#"{"email": "old@example.com", "phone": "+1 555 987 6543"}"#)
            let results = try await Self.destination(base).send([change])
            #expect(results == [.delivered])
        }
        let add = try #require(await receiver.requests.first { $0.path.hasSuffix(":addOperations") })
        #expect(
            try M.json(add.text)["operations"]
                == M.json(
                    """
                    [{"remove": {"userIdentifiers": [{"hashedEmail": "\(M.sha256("old@example.com"))"}]}},
                     {"create": {"userIdentifiers": [{"hashedEmail": "\(M.sha256("new@example.com"))"},
                                                     {"hashedPhoneNumber": "\(M.sha256("+15559876543"))"}]}}]
                    """))
    }

    @Test func errorsAndSettings() async throws {
        let receiver = TestReceiver { request in
            if request.path == "/token" { return .init(body: #"{"access_token": "t", "expires_in": 3600}"#) }
            return .init(
                status: 403,
                body:
                    #"{"error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED", "details": [{"errors": [{"message": "User doesn't have permission to access customer."}]}]}}"#
            )
        }
        try await receiver.serve { base in
            let error = await M.destinationError {
                _ = try await Self.destination(base, runID: 8).send([
                    try M.change(.add, #"{"profile_id": "p1"}"#, #"{"email": "a@example.com"}"#)
                ])
            }
            #expect(
                error?.retryable == false
                    && error?.description == "Google Ads: HTTP 403 User doesn't have permission to access customer.")
        }
        let validate = GoogleAdsCustomerMatchDestination.validate
        #expect(
            try M.validationError(#"{"type": "google_ads_customer_match", "userListId": "1"}"#, validate)
                == "destination.customerId: required")
        #expect(
            try M.validationError(
                #"{"type": "google_ads_customer_match", "customerId": "12345", "userListId": "1", "developerToken": "d", "clientId": "c", "clientSecret": "s", "refreshToken": "r"}"#,
                validate)?.contains("destination.customerId: a Google Ads customer id, 10 digits") == true)
        #expect(
            try M.validationError(
                #"{"type": "google_ads_customer_match", "customerId": "1234567890", "userListId": "1", "developerToken": "d", "clientId": "c", "clientSecret": "s", "refreshToken": "r", "listId": "2"}"#,
                validate)?.hasPrefix("destination.listId: unknown setting for google_ads_customer_match") == true)
    }
}
