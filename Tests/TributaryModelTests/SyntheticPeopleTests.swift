import Foundation
import Testing
@testable import TributaryModel
@testable import TributaryFixtures

/// The synthetic identity data set: deterministic, valid Segment calls, a truth that matches the events, every hard
/// case present, and the pairwise scores.
@Suite struct SyntheticPeopleTests {
    static let defaults = SyntheticPeople.Options()
    static let data = SyntheticPeople.generate(defaults)
    static let junkAnonymousIDs: Set = ["anonymous", "undefined", "null", "0", "00000000-0000-0000-0000-000000000000"]

    @Test func sameSeedGivesTheSameDataSet() {
        let options = SyntheticPeople.Options(people: 400, seed: 42)
        let first = SyntheticPeople.generate(options)
        let second = SyntheticPeople.generate(options)
        #expect(first.events == second.events)
        #expect(first.truth == second.truth)
        let other = SyntheticPeople.generate(.init(people: 400, seed: 43))
        #expect(other.events != first.events)
        #expect(other.truth != first.truth)
    }

    @Test func eventsAreValidSegmentCalls() throws {
        let events = Self.data.events
        #expect(Set(events.map(\.messageID)).count == events.count)
        let start = Self.defaults.start
        var outOfOrder = 0
        for (index, event) in events.enumerated() {
            #expect(event.userID != nil || event.anonymousID != nil, "\(event.messageID)")
            if event.type == .track { #expect(!(event.event ?? "").isEmpty) }
            for text in [event.properties, event.traits, event.context, event.integrations] {
                #expect((try? JSONSerialization.jsonObject(with: Data(text.utf8))) is [String: Any], "\(text)")
                // The collection API's own parser (strict: refuses \u0000) takes it too.
                guard case .object = try JSONParser.parse(Array(text.utf8)) else {
                    Issue.record("not an object: \(text)")
                    continue
                }
            }
            #expect(event.timestamp >= start.addingTimeInterval(-90 * 86_400) && event.receivedAt < start)
            #expect(event.timestamp <= event.receivedAt)
            if index > 0 {
                #expect(events[index - 1].receivedAt <= event.receivedAt)
                if events[index - 1].timestamp > event.timestamp { outOfOrder += 1 }
            }
        }
        #expect(outOfOrder > 0, "timestamps need not follow receive order")
    }

    @Test func threeToFourEventsPerPerson() {
        let perPerson = Double(Self.data.events.count) / Double(Self.defaults.people)
        #expect(perPerson >= 3 && perPerson <= 4, "\(perPerson)")
    }

    /// Every valid identifier in the events, normalized, is a key of the truth, and every key appears in the events.
    @Test func truthMatchesTheEvents() {
        var seen: Set<String> = []
        var rawEmails: Set<String> = []
        var rawPhones: Set<String> = []
        for event in Self.data.events {
            for (kind, raw) in identifiers(of: event) {
                guard let key = normalizedKey(kind, raw) else { continue }
                seen.insert(key)
                if kind == "email" { rawEmails.insert(raw) }
                if kind == "phone" { rawPhones.insert(raw) }
            }
        }
        #expect(seen == Set(Self.data.truth.keys))
        #expect(Self.data.truth.values.allSatisfy { !$0.isEmpty && $0.allSatisfy { (0..<Self.defaults.people).contains($0) } })
        // Formatting variants: upper-case letters, spaces around, phones in several layouts, all with "+country".
        #expect(rawEmails.contains { $0 != $0.lowercased() })
        #expect(rawEmails.contains { $0.hasPrefix(" ") || $0.hasSuffix(" ") })
        for fragment in ["(", "-", ".", " ", "+44"] { #expect(rawPhones.contains { $0.contains(fragment) }, "\(fragment)") }
        #expect(rawPhones.allSatisfy { $0.trimmingCharacters(in: .whitespaces).hasPrefix("+") })
        let kinds = Set(Self.data.truth.keys.map { String($0.prefix { $0 != ":" }) })
        #expect(kinds == ["user_id", "anonymous_id", "email", "phone", "crm_id"])
        #expect(Self.data.truth.keys.contains { $0.hasPrefix("anonymous_id:esp-") })
        #expect(Self.data.truth.keys.contains { $0.hasPrefix("anonymous_id:pos-") })
    }

    @Test func familyDevicesHaveBothMembersSignedIn() {
        let shared = sharedAnonymousIDs()
        let families = shared.filter { $0.value.owners.count == 2 }
        #expect(families.count == 15)
        for (id, device) in families {
            #expect(device.users == Set(device.owners.map { "u-\($0)" }), "\(id)")
        }
    }

    @Test func kiosksHaveManyUsers() {
        let kiosks = sharedAnonymousIDs().filter { $0.value.owners.count > 2 }
        #expect(kiosks.count == Self.defaults.kioskDevices)
        for (_, kiosk) in kiosks {
            #expect(kiosk.owners.count >= Self.defaults.usersPerKiosk)
            #expect(kiosk.users.count >= Self.defaults.usersPerKiosk)
        }
    }

    @Test func couplesShareOneEmailWithTheirOwnUserIDs() {
        let placeholders = Set(Self.defaults.placeholderEmails.map { "email:" + $0 })
        let couples = Self.data.truth.filter {
            $0.key.hasPrefix("email:") && !placeholders.contains($0.key) && $0.value.count > 1
        }
        #expect(couples.count == 10)
        var users: [String: Set<String>] = [:]
        for event in Self.data.events where event.type == .identify {
            guard let user = event.userID else { continue }
            for (kind, raw) in identifiers(of: event) where kind == "email" {
                if let key = normalizedKey(kind, raw), couples[key] != nil { users[key, default: []].insert(user) }
            }
        }
        for (key, owners) in couples {
            #expect(owners.count == 2)
            #expect(users[key] == Set(owners.map { "u-\($0)" }), "\(key)")
        }
    }

    @Test func placeholderEmailsAreTypedByManyVisitors() {
        for placeholder in Self.defaults.placeholderEmails {
            let owners = Self.data.truth["email:" + placeholder] ?? []
            #expect(owners.count >= Self.defaults.visitorsPerPlaceholder, "\(placeholder)")
            var anonymous = 0
            var signedIn = 0
            for event in Self.data.events where event.type == .identify {
                guard
                    identifiers(of: event).contains(where: {
                        $0.kind == "email" && normalizedKey("email", $0.raw) == "email:" + placeholder
                    })
                else { continue }
                if event.userID == nil { anonymous += 1 } else { signedIn += 1 }
            }
            #expect(anonymous > 0 && signedIn > 0, "\(placeholder): \(anonymous) anonymous, \(signedIn) signed in")
        }
    }

    @Test func junkIsPresentOutsideTheTruthAndNextToAValidIdentifier() {
        var junkAnonymous: Set<String> = []
        var junkEmails: [String: Int] = [:]
        var junkEvents = 0
        for event in Self.data.events {
            var junk = false
            if let anonymous = event.anonymousID, Self.junkAnonymousIDs.contains(anonymous) {
                junk = true
                junkAnonymous.insert(anonymous)
                #expect(event.userID.map { Self.data.truth["user_id:" + $0] != nil } == true)
            }
            for (kind, value) in emailValues(of: event) where normalizedKey(kind, value as? String ?? "") == nil {
                junk = true
                let text = value as? String
                let label =
                    switch text {
                    case nil: value is [String: Any] ? "object" : "number"
                    case let text? where text.count >= 1000: "long"
                    case let text? where text.unicodeScalars.contains(where: { $0.value < 0x20 }): "control"
                    case let text?: text
                    }
                junkEmails[label, default: 0] += 1
                #expect(event.anonymousID.map { Self.data.truth["anonymous_id:" + $0] != nil } == true)
            }
            if junk { junkEvents += 1 }
        }
        #expect(junkAnonymous == Self.junkAnonymousIDs)
        #expect(Set(junkEmails.keys) == ["", "null", "undefined", "long", "control", "number", "object"], "\(junkEmails)")
        let share = Double(junkEvents) / Double(Self.data.events.count)
        #expect(share > 0.003 && share < 0.03, "\(share)")
        #expect(!Self.data.truth.keys.contains { key in Self.junkAnonymousIDs.contains { key == "anonymous_id:" + $0 } })
        #expect(
            SyntheticPeople.generate(.init(people: 300, junkRate: 0)).events.allSatisfy {
                !Self.junkAnonymousIDs.contains($0.anonymousID ?? "")
            })
    }

    /// Linking the identifiers of each event, except shared ones, finds every person exactly; linking through shared
    /// identifiers too merges different people.
    @Test func resolverThatSkipsSharedIdentifiersIsPerfect() {
        let careful = resolve(Self.data) { Self.data.truth[$0]?.count == 1 }
        let scores = SyntheticPeople.pairwiseScores(truth: Self.data.truth, predicted: careful)
        #expect(scores.precision == 1 && scores.recall == 1)
        #expect(scores.scoredIdentifiers == Self.data.truth.values.count { $0.count == 1 })
        let naive = SyntheticPeople.pairwiseScores(truth: Self.data.truth, predicted: resolve(Self.data) { _ in true })
        #expect(naive.recall == 1 && naive.precision < 0.9, "\(naive)")
    }

    @Test func pairwiseScoresOnSmallPartitions() {
        let truth: [String: Set<Int>] = [
            "email:a1": [0], "user_id:a2": [0], "phone:+1": [0], "email:b1": [1], "user_id:b2": [1], "user_id:c": [2],
            "anonymous_id:shared": [0, 1],
        ]
        let perfect = [
            "email:a1": "A", "user_id:a2": "A", "phone:+1": "A", "email:b1": "B", "user_id:b2": "B",
            "user_id:c": "C", "anonymous_id:shared": "A", "email:unknown": "B",
        ]
        #expect(SyntheticPeople.pairwiseScores(truth: truth, predicted: perfect) == (1, 1, 6))
        let merged = truth.mapValues { _ in "X" }
        let all = SyntheticPeople.pairwiseScores(truth: truth, predicted: merged)
        #expect(all.recall == 1 && all.precision == 4.0 / 15 && all.scoredIdentifiers == 6)
        let singletons = Dictionary(uniqueKeysWithValues: truth.keys.map { ($0, $0) })
        #expect(SyntheticPeople.pairwiseScores(truth: truth, predicted: singletons) == (1, 0, 6))
        let split = ["email:a1": "A", "user_id:a2": "A", "phone:+1": "A2", "email:b1": "B", "user_id:b2": "B"]
        #expect(SyntheticPeople.pairwiseScores(truth: truth, predicted: split) == (1, 0.5, 5))
        #expect(SyntheticPeople.pairwiseScores(truth: truth, predicted: [:]) == (1, 1, 0))
        #expect(SyntheticPeople.pairwiseScores(truth: ["user_id:c": [2]], predicted: ["user_id:c": "C"]) == (1, 1, 1))
    }

    @Test func jsonQuotedEscapesQuotesBackslashesAndControlCharacters() throws {
        let text = "a\"b\\c\u{1}d\ne\u{1f}é🌊"
        let quoted = SyntheticPeople.jsonQuoted(text)
        #expect(quoted == #""a\"b\\c\u0001d\u000ae\u001fé🌊""#)
        #expect(try JSONParser.parse(Array(quoted.utf8)) == .string(text))
        #expect(SyntheticPeople.jsonQuoted("plain@example.com") == #""plain@example.com""#)
    }

    @Test func optionsScaleTheirDefaultsAndSmallSetsWork() {
        let big = SyntheticPeople.Options(people: 300_000)
        #expect(big.visitorsPerPlaceholder == 6000 && big.usersPerKiosk == 3000)
        #expect(SyntheticPeople.Options(people: 10).visitorsPerPlaceholder == 30)
        #expect(SyntheticPeople.generate(.init(people: 0)).events.isEmpty)
        let tiny = SyntheticPeople.generate(.init(people: 7))
        #expect(!tiny.events.isEmpty)
        #expect(tiny.truth.values.allSatisfy { $0.allSatisfy { (0..<7).contains($0) } })
    }

    /// Benchmarks use release builds, but tests run debug ones: 30,000 people take about half a second there. (A copy
    /// of the generator, and with it of the truth, on each insert once made this minutes.)
    @Test(.timeLimit(.minutes(3))) func thirtyThousandPeopleStayFastInDebugBuilds() {
        let data = SyntheticPeople.generate(.init(people: 30_000, seed: 9))
        let perPerson = Double(data.events.count) / 30_000
        #expect(perPerson >= 3 && perPerson <= 4, "\(perPerson)")
        let predicted = data.truth.compactMapValues { owners in owners.count == 1 ? owners.first.map { "p\($0)" } : nil }
        #expect(SyntheticPeople.pairwiseScores(truth: data.truth, predicted: predicted) == (1, 1, predicted.count))
    }

    // MARK: Helpers

    /// Anonymous ids owned by several people, with the user ids seen next to them.
    func sharedAnonymousIDs() -> [String: (owners: Set<Int>, users: Set<String>)] {
        var shared: [String: (owners: Set<Int>, users: Set<String>)] = [:]
        for (key, owners) in Self.data.truth where key.hasPrefix("anonymous_id:") && owners.count > 1 && !key.contains(":esp-") {
            shared[String(key.dropFirst("anonymous_id:".count))] = (owners, [])
        }
        for event in Self.data.events {
            if let anonymous = event.anonymousID, let user = event.userID, shared[anonymous] != nil {
                shared[anonymous]?.users.insert(user)
            }
        }
        return shared
    }

    /// A profile id for every valid identifier: union-find over the identifiers of each event that `link` accepts.
    func resolve(_ data: SyntheticPeople.Dataset, link: (String) -> Bool) -> [String: String] {
        var numbers: [String: Int] = [:]
        var parent: [Int] = []
        func find(_ node: Int) -> Int {
            var node = node
            while parent[node] != node {
                parent[node] = parent[parent[node]]
                node = parent[node]
            }
            return node
        }
        for event in data.events {
            var previous: Int?
            for (kind, raw) in identifiers(of: event) {
                guard let key = normalizedKey(kind, raw) else { continue }
                let number = numbers[key] ?? parent.count
                if number == parent.count {
                    numbers[key] = number
                    parent.append(number)
                }
                guard link(key) else { continue }
                if let previous { parent[find(number)] = find(previous) }
                previous = number
            }
        }
        return numbers.mapValues { "p\(find($0))" }
    }

    /// (kind, raw value) of the string identifiers in an event, as the identity stage reads them.
    func identifiers(of event: IncomingEvent) -> [(kind: String, raw: String)] {
        var found: [(kind: String, raw: String)] = []
        if let user = event.userID { found.append(("user_id", user)) }
        if let anonymous = event.anonymousID { found.append(("anonymous_id", anonymous)) }
        for (kind, value) in emailValues(of: event) + phoneValues(of: event) {
            if let text = value as? String { found.append((kind, text)) }
        }
        let context = object(event.context)
        for external in context["externalIds"] as? [[String: Any]] ?? [] {
            if let id = external["id"] as? String, let type = external["type"] as? String {
                found.append((type.lowercased(), id))
            }
        }
        return found
    }

    func emailValues(of event: IncomingEvent) -> [(String, Any)] { traitValues("email", of: event) }
    func phoneValues(of event: IncomingEvent) -> [(String, Any)] { traitValues("phone", of: event) }

    func traitValues(_ name: String, of event: IncomingEvent) -> [(String, Any)] {
        var values: [(String, Any)] = []
        if event.type == .identify, let value = object(event.traits)[name] { values.append((name, value)) }
        if let traits = object(event.context)["traits"] as? [String: Any], let value = traits[name] {
            values.append((name, value))
        }
        return values
    }

    func object(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    /// The truth key of an identifier, or nil for junk, normalized as the identity stage does.
    func normalizedKey(_ kind: String, _ raw: String) -> String? {
        let trimmed = raw.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty || trimmed.unicodeScalars.contains(where: { $0.value < 0x20 }) { return nil }
        switch kind {
        case "email":
            let email = trimmed.lowercased()
            guard email.contains("@"), email.count <= 254, email != "null", email != "undefined" else { return nil }
            return "email:" + email
        case "phone":
            let digits = trimmed.enumerated().filter {
                $0.element.isASCII && ($0.element.isNumber || ($0.offset == 0 && $0.element == "+"))
            }
            return "phone:" + String(digits.map(\.element))
        case "anonymous_id" where Self.junkAnonymousIDs.contains(trimmed): return nil
        default: return kind + ":" + trimmed
        }
    }
}
