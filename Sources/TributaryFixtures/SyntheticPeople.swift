import Foundation
import TributaryModel

/// A deterministic, realistic multi-channel customer data set with known ground truth, for measuring identity
/// resolution: its accuracy in tests and its speed in benchmarks.
///
/// People use a mix of channels: web browsers (page and track calls, sign-in identifies, anonymous newsletter
/// identifies), a mobile app (screens), an email platform (opens and clicks under a per-recipient anonymous id
/// `esp-<n>`), shop tills (`Order Completed` under an anonymous id per transaction, with the phone of loyalty members)
/// and a CRM (identify with the CRM id in `context.externalIds`). Emails and phones come in formatting variants
/// (`" Jane.Doe@Example.COM "`, `"+1 (555) 010-1234"`) that normalize to one value. On top come the hard cases:
/// family devices, couples sharing an email, placeholder emails typed by many visitors, shop kiosks, and junk
/// identifiers (`"anonymous"`, `"null"`, emails of the wrong JSON type, ...).
///
/// ```swift
/// let data = SyntheticPeople.generate(.init(people: 300_000, seed: 7))
/// // data.events: about 3.5 events a person, in receive order
/// // data.truth["user_id:u-12"] == [12] if person 12 signed in somewhere; kiosks have thousands of owners
/// ```
///
/// The truth holds every identifier that appears in the events, junk excepted, under its normalized key. Each person's
/// unshared identifiers are connected through that person's own events without passing through a shared identifier,
/// so a resolver that links identifiers seen in one event, and never through shared ones, scores precision 1 and
/// recall 1 in ``pairwiseScores(truth:predicted:)``. People who only browse anonymously with one browser or buy once
/// in a shop without a loyalty card own a single identifier.
public struct SyntheticPeople: Sendable {
    /// What to generate.
    public struct Options: Sendable {
        /// How many people; person indices in the truth are `0..<people`.
        public var people: Int
        /// The seed of the pseudo-random generator; one seed always gives the same data set.
        public var seed: UInt64
        /// Events happen in the 90 days before `start`, and are all received before it.
        public var start: Date
        /// The share of people in two-person households sharing one device (one anonymous id) on which both log in.
        public var familyDeviceRate: Double
        /// The share of people in couples sharing one email, each with their own user id.
        public var sharedEmailRate: Double
        /// Emails people type into forms instead of their own.
        public var placeholderEmails: [String]
        /// How many distinct people type each placeholder email.
        public var visitorsPerPlaceholder: Int
        /// Shop kiosks: one anonymous id on which many different users log in.
        public var kioskDevices: Int
        /// How many distinct people log in on each kiosk.
        public var usersPerKiosk: Int
        /// The share of events carrying junk identifiers; each also carries a valid identifier of its person.
        public var junkRate: Double

        /// 2026-01-01T00:00:00Z, so that data sets do not depend on the day they are generated.
        public static let defaultStart = Date(timeIntervalSince1970: 1_767_225_600)

        /// - Parameters:
        ///   - visitorsPerPlaceholder: nil for `max(30, people / 50)`.
        ///   - usersPerKiosk: nil for `max(30, people / 100)`.
        public init(
            people: Int = 1000, seed: UInt64 = 1, start: Date = Options.defaultStart, familyDeviceRate: Double = 0.03,
            sharedEmailRate: Double = 0.02,
            placeholderEmails: [String] = ["test@test.com", "none@none.com", "noemail@example.com"],
            visitorsPerPlaceholder: Int? = nil, kioskDevices: Int = 2, usersPerKiosk: Int? = nil, junkRate: Double = 0.01
        ) {
            self.people = people
            self.seed = seed
            self.start = start
            self.familyDeviceRate = familyDeviceRate
            self.sharedEmailRate = sharedEmailRate
            self.placeholderEmails = placeholderEmails
            self.visitorsPerPlaceholder = visitorsPerPlaceholder ?? max(30, people / 50)
            self.kioskDevices = kioskDevices
            self.usersPerKiosk = usersPerKiosk ?? max(30, people / 100)
            self.junkRate = junkRate
        }
    }

    /// The generated events and who really owns each identifier.
    public struct Dataset: Sendable {
        /// In receive order (`receivedAt` never decreases).
        public var events: [IncomingEvent]
        /// Ground truth: normalized identifier key "kind:value" -> the person indices who really own it.
        /// Shared identifiers (family device, shared email, placeholder email, kiosk) have more than one owner.
        ///
        /// Kinds are `user_id`, `anonymous_id`, `email` (trimmed, lower-cased), `phone` (`+` and digits) and `crm_id`
        /// (from `context.externalIds`); for example `email:jane.doe12@example.com` or `phone:+12015550123`.
        public var truth: [String: Set<Int>]
    }

    /// Generates the data set of `options`; the same options always give the same data set.
    public static func generate(_ options: Options) -> Dataset {
        var generator = SyntheticGenerator(options)
        return generator.run()
    }

    /// Pairwise precision and recall of a predicted partition against the truth, over identifiers that have
    /// exactly one true owner and appear in `predicted` (key "kind:value" -> profile id string).
    ///
    /// - precision = pairs in the same predicted profile that belong to the same person / pairs in the same predicted
    ///   profile
    /// - recall = pairs in the same predicted profile that belong to the same person / pairs belonging to the same
    ///   person
    ///
    /// Computed from contingency counts (the sum of n(n-1)/2 over cells), never by enumerating pairs. An empty
    /// denominator gives 1.
    public static func pairwiseScores(
        truth: [String: Set<Int>], predicted: [String: String]
    ) -> (precision: Double, recall: Double, scoredIdentifiers: Int) {
        var profileNumbers: [String: Int] = [:]
        var cells: [Int64: Int] = [:]
        var profiles: [Int: Int] = [:]
        var people: [Int: Int] = [:]
        profileNumbers.reserveCapacity(predicted.count / 2)
        cells.reserveCapacity(predicted.count / 2)
        var scored = 0
        for (key, profile) in predicted {
            guard let owners = truth[key], owners.count == 1, let person = owners.first else { continue }
            scored += 1
            let number: Int
            if let known = profileNumbers[profile] {
                number = known
            } else {
                number = profileNumbers.count
                profileNumbers[profile] = number
            }
            cells[Int64(number) << 32 | Int64(UInt32(truncatingIfNeeded: person)), default: 0] += 1
            profiles[number, default: 0] += 1
            people[person, default: 0] += 1
        }
        let together = cells.values.reduce(0) { $0 + $1 * ($1 - 1) / 2 }
        let predictedPairs = profiles.values.reduce(0) { $0 + $1 * ($1 - 1) / 2 }
        let truePairs = people.values.reduce(0) { $0 + $1 * ($1 - 1) / 2 }
        return (
            predictedPairs == 0 ? 1 : Double(together) / Double(predictedPairs),
            truePairs == 0 ? 1 : Double(together) / Double(truePairs), scored
        )
    }

    /// `text` as a JSON string literal, with quotes, backslashes and control characters (as `\u00XX`) escaped.
    static func jsonQuoted(_ text: String) -> String {
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) { return "\"" + text + "\"" }
        var out: [UInt8] = [0x22]
        out.reserveCapacity(text.utf8.count + 16)
        let hex = Array("0123456789abcdef".utf8)
        for byte in text.utf8 {
            switch byte {
            case 0x22, 0x5C: out += [0x5C, byte]
            case ..<0x20: out += [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: out.append(byte)
            }
        }
        out.append(0x22)
        return String(decoding: out, as: UTF8.self)
    }

    /// The generator the data comes from (``SeededRandom``).
    public typealias Random = SeededRandom
}

/// One person's identifiers; each is added to the truth the first time an event carries it.
private struct SyntheticPerson {
    let index: Int
    /// Indices into the name lists.
    let first: Int
    let last: Int
    let userID: String
    /// Normalized (lower-case, no spaces); shared by a couple.
    let email: String
    /// The `n` of the email platform's anonymous id `esp-<n>`, one per email address.
    let recipient: Int
    /// `+`, country code, national digits.
    let phone: String
    let british: Bool
    var userShown = false
    var emailShown = false
    var phoneShown = false
}

/// Builds a ``SyntheticPeople/Dataset``: roles first (who shares what), then each person's events, then receive order.
private struct SyntheticGenerator {
    typealias Random = SyntheticPeople.Random
    enum Channel { case web, app, email, shop, crm }

    let options: SyntheticPeople.Options
    var random: Random
    var events: [IncomingEvent] = []
    var receivedAt: [Double] = []
    var truth: [String: Set<Int>] = [:]
    let people: Int
    let messagePrefix: String
    let earliest: Double
    let latest: Double
    let junkChance: Double
    let placeholders: [String]
    var messages = 0
    var transactions = 0
    var anonymousJunk = 0
    var emailJunk = 0

    var familyOf: [Int: Int] = [:]
    var familyDevices: [(id: String, app: Bool, first: Int)] = []
    var coupleOf: [Int: Int] = [:]
    var couples: [(last: Int, email: String, esp: Bool)] = []
    var placeholderForms: [Int: [(placeholder: Int, signedIn: Bool)]] = [:]
    var kioskLogins: [Int: [Int]] = [:]
    var kiosks: [String] = []

    init(_ options: SyntheticPeople.Options) {
        self.options = options
        random = Random(seed: options.seed)
        people = max(0, options.people)
        messagePrefix = "syn-\(options.seed)-"
        let start = options.start.timeIntervalSince1970
        earliest = start - 90 * 86_400
        latest = start - 86_400
        let junk = min(max(options.junkRate, 0), 0.9)
        junkChance = junk / (1 - junk)
        placeholders = options.placeholderEmails.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
    }

    mutating func run() -> SyntheticPeople.Dataset {
        assignRoles()
        events.reserveCapacity(people * 4 + 64)
        receivedAt.reserveCapacity(people * 4 + 64)
        truth.reserveCapacity(people * 5)
        for index in 0..<people { person(index) }
        // Receive order, applied in place by moving events along the permutation's cycles: no second array of
        // events, no retain and release of their strings.
        let keys = receivedAt
        var order = Array(events.indices)
        order.sort { keys[$0] < keys[$1] || (keys[$0] == keys[$1] && $0 < $1) }
        events.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            for start in order.indices where order[start] != start {
                let held = (base + start).move()
                var position = start
                while true {
                    let source = order[position]
                    order[position] = position
                    if source == start {
                        (base + position).initialize(to: held)
                        break
                    }
                    (base + position).moveInitialize(from: base + source, count: 1)
                    position = source
                }
            }
        }
        return SyntheticPeople.Dataset(events: events, truth: truth)
    }

    // MARK: Roles

    /// Chooses family pairs and couples (disjoint), placeholder visitors and kiosk users (anyone).
    mutating func assignRoles() {
        var pool = Array(0..<people)
        func draw(_ count: Int, _ random: inout Random) -> ArraySlice<Int> {
            let count = min(count, pool.count)
            for index in 0..<count { pool.swapAt(index, index + random.below(pool.count - index)) }
            return pool[..<count]
        }
        let pairs = min(people / 2, Int((Double(people) * max(options.familyDeviceRate, 0) / 2).rounded()))
        let coupleCount = min(
            (people - 2 * pairs) / 2, Int((Double(people) * max(options.sharedEmailRate, 0) / 2).rounded()))
        let paired = Array(draw(2 * (pairs + coupleCount), &random))
        for pair in 0..<pairs {
            let app = random.chance(0.4)
            familyDevices.append((uuid(uppercase: app && random.chance(0.5)), app, paired[2 * pair]))
            familyOf[paired[2 * pair]] = pair
            familyOf[paired[2 * pair + 1]] = pair
        }
        for couple in 0..<coupleCount {
            let last = random.below(Self.lastNames.count)
            couples.append((last, "\(Self.lastNames[last]).family\(couple)@\(random.pick(Self.domains))", random.chance(0.5)))
            coupleOf[paired[2 * (pairs + couple)]] = couple
            coupleOf[paired[2 * (pairs + couple) + 1]] = couple
        }
        for placeholder in placeholders.indices {
            for visitor in draw(options.visitorsPerPlaceholder, &random) {
                placeholderForms[visitor, default: []].append((placeholder, random.chance(0.3)))
            }
        }
        for kiosk in 0..<max(0, options.kioskDevices) {
            kiosks.append(uuid(uppercase: false))
            for user in draw(options.usersPerKiosk, &random) { kioskLogins[user, default: []].append(kiosk) }
        }
    }

    // MARK: People

    mutating func person(_ index: Int) {
        let family = familyOf[index]
        let couple = coupleOf[index]
        let forms = placeholderForms[index] ?? []
        let kioskVisits = kioskLogins[index] ?? []
        if family == nil && couple == nil && forms.isEmpty && kioskVisits.isEmpty {
            let roll = random.unit()
            if roll < 0.07 { return anonymousVisitor(index) }
            if roll < 0.10 { return walkInShopper(index) }
        }
        var person = makePerson(index, couple: couple)
        var web = couple != nil || !forms.isEmpty || random.chance(0.55)
        let app = random.chance(0.2)
        let email = couple.map { couples[$0].esp } ?? random.chance(0.25)
        let shop = random.chance(0.12)
        let crm = shop || random.chance(0.15)  // loyalty members are signed up in the CRM
        if !(web || app || email || crm || family != nil || !kioskVisits.isEmpty) { web = true }
        // Couples' browsers always sign in: their only email is shared, so a newsletter form would not link.
        let account = couple != nil || random.chance(0.6)
        // The user id meets the email in a web sign-in, the CRM, a family device or a kiosk; else the app tells it.
        let userMeetsEmail = (web && account) || crm || family != nil || !kioskVisits.isEmpty
        var browsers: [String] = []
        if web { browsers = webVisits(&person, account: account, newsletter: couple == nil) }
        if app { appVisits(&person, email: (!userMeetsEmail && (web || email)) || random.chance(0.2)) }
        if email { emailActivity(&person) }
        if shop { shopping(&person) }
        if crm { crmRecord(&person) }
        if let family { familyDevice(&person, family) }
        for kiosk in kioskVisits { kioskVisit(&person, kiosk) }
        for form in forms { placeholderForm(&person, form.placeholder, browser: browsers[0], signedIn: form.signedIn && account) }
    }

    mutating func makePerson(_ index: Int, couple: Int?) -> SyntheticPerson {
        let firstIndex = random.below(Self.firstNames.count)
        let lastIndex = couple.map { couples[$0].last } ?? random.below(Self.lastNames.count)
        let email: String
        if let couple {
            email = couples[couple].email
        } else {
            let first = Self.firstNames[firstIndex]
            let last = Self.lastNames[lastIndex]
            let domain = random.pick(Self.domains)
            switch random.below(4) {
            case 0: email = "\(first).\(last)\(index)@\(domain)"
            case 1: email = "\(first)\(last)\(index)@\(domain)"
            case 2: email = "\(first.prefix(1))\(last)\(index)@\(domain)"
            default: email = "\(first)_\(last)\(index)@\(domain)"
            }
        }
        // Unique per person: the UK number is a bijection of the index, the US one spreads it over area codes.
        let british = random.chance(0.15)
        let phone: String
        if british {
            phone = "+447" + Self.padded((index &* 7_777_777) % 900_000_000 + 100_000_000, 9)
        } else {
            let rest = index / 797
            phone = "+1\(201 + index % 797)\(200 + rest / 10_000 % 800)" + Self.padded(rest % 10_000, 4)
        }
        return SyntheticPerson(
            index: index, first: firstIndex, last: lastIndex, userID: "u-\(index)", email: email,
            recipient: couple.map { people + $0 } ?? index, phone: phone, british: british)
    }

    mutating func anonymousVisitor(_ index: Int) {
        let browser = uuid(uppercase: false)
        own("anonymous_id:" + browser, index)
        let context = random.pick(Self.webContexts)
        var time = sessionStart()
        for _ in 0...random.below(3) { browse(anonymous: browser, user: nil, context: context, at: &time) }
    }

    mutating func walkInShopper(_ index: Int) {
        let store = 1 + random.below(40)
        transactions += 1
        let id = "pos-\(store)-\(transactions)"
        own("anonymous_id:" + id, index)
        emit(
            .track, .shop, at: sessionStart(), event: "Order Completed", anonymous: id,
            properties: order(id, store: store), context: Self.shopContext)
    }

    // MARK: Channels

    /// One to three browsers, each linked by a sign-in (with an account) or a newsletter form.
    mutating func webVisits(_ person: inout SyntheticPerson, account: Bool, newsletter: Bool) -> [String] {
        let count = random.chance(0.2) ? (random.chance(0.3) ? 3 : 2) : 1
        var browsers: [String] = []
        for number in 0..<count {
            let browser = uuid(uppercase: false)
            own("anonymous_id:" + browser, person.index)
            browsers.append(browser)
            let context = random.pick(Self.webContexts)
            var time = sessionStart()
            browse(anonymous: browser, user: nil, context: context, at: &time)
            if random.chance(0.2) { browse(anonymous: browser, user: nil, context: context, at: &time) }
            if account && (number == 0 || !newsletter || random.chance(0.85)) {
                let user = user(&person)
                let traits = Self.traits(email: email(&person), phone: nil, person)
                emit(.identify, .web, at: time, user: user, anonymous: browser, traits: traits, context: context)
                step(&time)
                if random.chance(0.2) {
                    emit(
                        .track, .web, at: time, event: "Product Added", user: user, anonymous: browser,
                        properties: random.pick(Self.products), context: context)
                }
            } else {
                let traits = "{\"email\":" + SyntheticPeople.jsonQuoted(email(&person)) + ",\"newsletter\":true}"
                emit(.identify, .web, at: time, anonymous: browser, traits: traits, context: context)
            }
        }
        return browsers
    }

    mutating func appVisits(_ person: inout SyntheticPerson, email withEmail: Bool) {
        let ios = random.chance(0.55)
        let device = uuid(uppercase: ios)
        own("anonymous_id:" + device, person.index)
        let context = ios ? Self.iosContext : Self.androidContext
        var time = sessionStart()
        if random.chance(0.5) { screen(anonymous: device, user: nil, context: context, at: &time) }
        let user = user(&person)
        let phone = random.chance(0.3) ? self.phone(&person) : nil
        let traits = Self.traits(email: nil, phone: phone, person)
        let identifyContext = withEmail ? Self.withTraits(context, ["email": email(&person)]) : context
        emit(.identify, .app, at: time, user: user, anonymous: device, traits: traits, context: identifyContext)
        step(&time)
        for _ in 0...(random.chance(0.4) ? 1 : 0) { screen(anonymous: device, user: user, context: context, at: &time) }
    }

    mutating func emailActivity(_ person: inout SyntheticPerson) {
        let recipient = "esp-\(person.recipient)"
        own("anonymous_id:" + recipient, person.index)
        for _ in 0...(random.chance(0.25) ? 1 : 0) {
            var time = sessionStart()
            let campaign = random.below(Self.campaigns.count)
            let context = Self.withTraits(Self.emailContext, ["email": email(&person)])
            emit(
                .track, .email, at: time, event: "Email Opened", anonymous: recipient,
                properties: Self.campaigns[campaign], context: context)
            if random.chance(0.35) {
                step(&time)
                emit(
                    .track, .email, at: time, event: "Email Link Clicked", anonymous: recipient,
                    properties: Self.campaigns[campaign], context: context)
            }
        }
    }

    /// Loyalty purchases: an anonymous id per transaction and the member's phone.
    mutating func shopping(_ person: inout SyntheticPerson) {
        let store = 1 + random.below(40)
        for _ in 0...(random.chance(0.3) ? 1 : 0) {
            transactions += 1
            let id = "pos-\(store)-\(transactions)"
            own("anonymous_id:" + id, person.index)
            let context = Self.withTraits(Self.shopContext, ["phone": phone(&person)])
            emit(
                .track, .shop, at: sessionStart(), event: "Order Completed", anonymous: id,
                properties: order(id, store: store), context: context)
        }
    }

    mutating func crmRecord(_ person: inout SyntheticPerson) {
        let crmID = "0035g00000" + Self.padded(person.index, 8)
        own("crm_id:" + crmID, person.index)
        let user = user(&person)
        let traits = Self.traits(email: email(&person), phone: phone(&person), person, extra: #","lifecycle_stage":"customer""#)
        let context =
            #"{"externalIds":[{"id":"# + SyntheticPeople.jsonQuoted(crmID)
            + #","type":"crm_id","collection":"users","encoding":"none"}],"library":{"name":"crm-sync","version":"2.1.0"}}"#
        emit(.identify, .crm, at: sessionStart(), user: user, traits: traits, context: context)
    }

    /// Both members of the household sign in on the one device; the first also browses on it before.
    mutating func familyDevice(_ person: inout SyntheticPerson, _ family: Int) {
        let device = familyDevices[family]
        own("anonymous_id:" + device.id, person.index)
        let context = device.app ? Self.iosContext : Self.webContexts[0]
        var time = sessionStart()
        if device.first == person.index { view(device.id, user: nil, app: device.app, context: context, at: &time) }
        let user = user(&person)
        let traits = Self.traits(email: email(&person), phone: nil, person)
        emit(.identify, device.app ? .app : .web, at: time, user: user, anonymous: device.id, traits: traits, context: context)
        step(&time)
        view(device.id, user: user, app: device.app, context: context, at: &time)
    }

    mutating func kioskVisit(_ person: inout SyntheticPerson, _ kiosk: Int) {
        let id = kiosks[kiosk]
        own("anonymous_id:" + id, person.index)
        var time = sessionStart()
        if random.chance(0.4) { browse(anonymous: id, user: nil, context: Self.kioskContext, at: &time) }
        let user = user(&person)
        let traits = Self.traits(email: email(&person), phone: nil, person)
        emit(.identify, .web, at: time, user: user, anonymous: id, traits: traits, context: Self.kioskContext)
        step(&time)
        browse(anonymous: id, user: user, context: Self.kioskContext, at: &time)
    }

    /// A contact form on the person's first browser, filled with a placeholder instead of the real email.
    mutating func placeholderForm(_ person: inout SyntheticPerson, _ placeholder: Int, browser: String, signedIn: Bool) {
        own("email:" + placeholders[placeholder], person.index)
        let user = signedIn ? user(&person) : nil
        let traits =
            "{\"email\":" + SyntheticPeople.jsonQuoted(emailVariant(placeholders[placeholder])) + ",\"form\":\"contact\"}"
        emit(.identify, .web, at: sessionStart(), user: user, anonymous: browser, traits: traits, context: Self.webContexts[0])
    }

    mutating func browse(anonymous: String, user: String?, context: String, at time: inout Double) {
        if random.chance(0.6) {
            let page = random.pick(Self.pages)
            emit(
                .page, .web, at: time, name: page.name, user: user, anonymous: anonymous, properties: page.properties,
                context: context)
        } else {
            emit(
                .track, .web, at: time, event: "Product Viewed", user: user, anonymous: anonymous,
                properties: random.pick(Self.products), context: context)
        }
        step(&time)
    }

    mutating func screen(anonymous: String, user: String?, context: String, at time: inout Double) {
        emit(.screen, .app, at: time, name: random.pick(Self.screens), user: user, anonymous: anonymous, context: context)
        step(&time)
    }

    mutating func view(_ device: String, user: String?, app: Bool, context: String, at time: inout Double) {
        if app {
            screen(anonymous: device, user: user, context: context, at: &time)
        } else {
            browse(anonymous: device, user: user, context: context, at: &time)
        }
    }

    // MARK: Identifiers

    mutating func own(_ key: String, _ person: Int) { truth[key, default: []].insert(person) }

    mutating func user(_ person: inout SyntheticPerson) -> String {
        if !person.userShown {
            person.userShown = true
            own("user_id:" + person.userID, person.index)
        }
        return person.userID
    }

    /// A formatting variant of the person's email.
    mutating func email(_ person: inout SyntheticPerson) -> String {
        if !person.emailShown {
            person.emailShown = true
            own("email:" + person.email, person.index)
        }
        return emailVariant(person.email)
    }

    /// A formatting variant of the person's phone, always with its `+` country code.
    mutating func phone(_ person: inout SyntheticPerson) -> String {
        if !person.phoneShown {
            person.phoneShown = true
            own("phone:" + person.phone, person.index)
        }
        let template = random.pick(person.british ? Self.ukPhoneTemplates : Self.usPhoneTemplates).utf8
        let digits = person.phone.utf8.dropFirst(person.british ? 3 : 2)
        return String(unsafeUninitializedCapacity: template.count) { buffer in
            var next = digits.startIndex
            for (offset, byte) in template.enumerated() {
                if byte == UInt8(ascii: "d") {
                    buffer[offset] = digits[next]
                    next = digits.index(after: next)
                } else {
                    buffer[offset] = byte
                }
            }
            return template.count
        }
    }

    /// `" Jane.Doe@Example.COM "` for `jane.doe@example.com`: the same after trimming and lower-casing.
    mutating func emailVariant(_ email: String) -> String {
        let style = random.below(10)
        let spaces = random.below(10)  // 0: before, 1: after, 2: both
        if style < 5 && spaces > 2 { return email }
        var bytes = Array(email.utf8)
        var domain = false
        var startOfWord = true
        for index in bytes.indices {
            let byte = bytes[index]
            if byte == UInt8(ascii: "@") { domain = true }
            let letter = byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")
            let upper: Bool
            switch style {
            case 5, 6: upper = startOfWord
            case 7: upper = random.chance(0.3)
            case 8: upper = domain
            case 9: upper = true
            default: upper = false
            }
            if letter && upper { bytes[index] = byte - 32 }
            startOfWord = !letter
        }
        if spaces == 0 || spaces == 2 { bytes.insert(UInt8(ascii: " "), at: 0) }
        if spaces == 1 || spaces == 2 { bytes.append(UInt8(ascii: " ")) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A random version-4 UUID, lower-case like analytics.js and Android or upper-case like iOS.
    mutating func uuid(uppercase: Bool) -> String {
        let high = random.next()
        let low = random.next()
        let hex = uppercase ? Self.upperHex : Self.lowerHex
        return String(unsafeUninitializedCapacity: 36) { buffer in
            var position = 0
            for nibble in 0..<32 {
                if position == 8 || position == 13 || position == 18 || position == 23 {
                    buffer[position] = UInt8(ascii: "-")
                    position += 1
                }
                var value = Int(truncatingIfNeeded: (nibble < 16 ? high >> (60 - 4 * nibble) : low >> (124 - 4 * nibble)) & 0xF)
                if nibble == 12 { value = 4 }
                if nibble == 16 { value = 8 | value & 3 }
                buffer[position] = hex[value]
                position += 1
            }
            return 36
        }
    }

    // MARK: Events

    /// The start of a session of at most an hour within the 90 days.
    mutating func sessionStart() -> Double { earliest + random.unit() * (latest - earliest - 3600) }

    mutating func step(_ time: inout Double) { time += 5 + random.unit() * 300 }

    mutating func latency(_ channel: Channel) -> Double {
        switch channel {
        case .web: return 0.05 + random.unit() * 1.5
        case .app: return random.chance(0.06) ? 60 + random.unit() * 6 * 3600 : 0.1 + random.unit() * 3  // queued offline
        case .email: return 1 + random.unit() * 300
        case .shop: return 3600 + random.unit() * 7 * 3600  // the till uploads its day later
        case .crm: return 60 + random.unit() * 3600
        }
    }

    /// Appends an event and, at the junk rate, a junk copy of it.
    mutating func emit(
        _ type: CallType, _ channel: Channel, at time: Double, event: String? = nil, name: String? = nil,
        user: String? = nil, anonymous: String? = nil, properties: String = "{}", traits: String = "{}", context: String
    ) {
        append(
            type, channel, at: time, event: event, name: name, user: user, anonymous: anonymous,
            properties: properties, traits: traits, context: context)
        if junkChance > 0 && random.chance(junkChance) { junk(user: user, anonymous: anonymous, context, channel, at: time) }
    }

    mutating func append(
        _ type: CallType, _ channel: Channel, at time: Double, event: String? = nil, name: String? = nil,
        user: String?, anonymous: String?, properties: String = "{}", traits: String = "{}", context: String
    ) {
        messages += 1
        let received = time + latency(channel)
        let timestamp = Date(timeIntervalSince1970: time)
        events.append(
            IncomingEvent(
                messageID: messagePrefix + String(messages), type: type, event: event, name: name, userID: user,
                anonymousID: anonymous, groupID: nil, previousID: nil, timestamp: timestamp, originalTimestamp: timestamp,
                sentAt: Date(timeIntervalSince1970: received), receivedAt: Date(timeIntervalSince1970: received),
                properties: properties, traits: traits, context: context, integrations: "{}"))
        receivedAt.append(received)
    }

    /// A junk anonymous id next to the real user id, or a junk email next to the real anonymous id; kinds in turn.
    mutating func junk(user: String?, anonymous: String?, _ context: String, _ channel: Channel, at time: Double) {
        let time = time + 1 + random.unit() * 30
        if let user, anonymous == nil || random.chance(0.5) {
            let junk = Self.junkAnonymousIDs[anonymousJunk % Self.junkAnonymousIDs.count]
            anonymousJunk += 1
            append(
                .track, channel, at: time, event: "Product Viewed", user: user, anonymous: junk,
                properties: random.pick(Self.products), context: context)
        } else if let anonymous {
            let member = Self.junkEmails[emailJunk % Self.junkEmails.count]
            let asTraits = emailJunk / Self.junkEmails.count % 2 == 0
            emailJunk += 1
            if asTraits {
                append(
                    .identify, channel, at: time, user: user, anonymous: anonymous, traits: "{" + member + "}",
                    context: Self.webContexts[0])
            } else {
                append(
                    .track, channel, at: time, event: "Form Submitted", user: user, anonymous: anonymous,
                    context: String(Self.webContexts[0].dropLast()) + #","traits":{"# + member + "}}")
            }
        }
    }

    /// Static, so that `Self.traits(email: email(&person), ...)` does not copy `self` (and with it the truth) first.
    static func traits(email: String?, phone: String?, _ person: SyntheticPerson, extra: String = "") -> String {
        var text = "{"
        if let email { text += "\"email\":" + SyntheticPeople.jsonQuoted(email) + "," }
        if let phone { text += "\"phone\":" + SyntheticPeople.jsonQuoted(phone) + "," }
        return text + "\"first_name\":\"" + Self.firstDisplayNames[person.first] + "\",\"last_name\":\""
            + Self.lastDisplayNames[person.last] + "\"" + extra + "}"
    }

    /// `context` (a JSON object) with a `traits` object of string members added.
    static func withTraits(_ context: String, _ traits: KeyValuePairs<String, String>) -> String {
        var text = String(context.dropLast()) + ",\"traits\":{"
        for (index, (key, value)) in traits.enumerated() {
            text += (index == 0 ? "" : ",") + SyntheticPeople.jsonQuoted(key) + ":" + SyntheticPeople.jsonQuoted(value)
        }
        return text + "}}"
    }

    mutating func order(_ id: String, store: Int) -> String {
        let cents = 500 + random.below(25_000)
        return #"{"order_id":"\#(id)","store_id":"store-\#(store)","revenue":\#(cents / 100).\#(Self.padded(cents % 100, 2)),"#
            + #""currency":"USD"}"#
    }

    static func appContext(
        _ version: String, _ device: String, _ model: String, _ library: String, _ libraryVersion: String, _ os: String,
        _ osVersion: String
    ) -> String {
        #"{"app":{"name":"Tributary Outfitters","version":"\#(version)"},"device":{"type":"\#(device)","model":"\#(model)"},"#
            + #""library":{"name":"\#(library)","version":"\#(libraryVersion)"},"os":{"name":"\#(os)","version":"\#(osVersion)"}}"#
    }

    static func padded(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    // MARK: Constants

    static let lowerHex = Array("0123456789abcdef".utf8)
    static let upperHex = Array("0123456789ABCDEF".utf8)
    static let usPhoneTemplates = [
        "+1 (ddd) ddd-dddd", "+1-ddd-ddd-dddd", "+1 ddd ddd dddd", "+1dddddddddd", "+1.ddd.ddd.dddd", " +1 ddd-ddd-dddd ",
    ]
    static let ukPhoneTemplates = [
        "+44 dddd dddddd", "+44-dddd-dddddd", "+44dddddddddd", "+44 (dddd) dddddd", "+44 ddd ddd dddd",
    ]
    static let firstNames = [
        "james", "mary", "john", "patricia", "robert", "jennifer", "michael", "linda", "william", "elizabeth", "david",
        "barbara", "richard", "susan", "joseph", "jessica", "thomas", "sarah", "charles", "karen", "daniel", "nancy",
        "matthew", "lisa", "anthony", "betty", "mark", "sandra", "paul", "ashley", "steven", "emily", "andrew", "donna",
        "joshua", "michelle", "kevin", "carol", "brian", "amanda", "jane", "omar", "priya", "wei", "sofia", "lukas",
    ]
    static let lastNames = [
        "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez", "martinez",
        "hernandez", "lopez", "gonzalez", "wilson", "anderson", "thomas", "taylor", "moore", "jackson", "martin", "lee",
        "perez", "thompson", "white", "harris", "sanchez", "clark", "ramirez", "lewis", "robinson", "walker", "young",
        "allen", "king", "wright", "scott", "torres", "nguyen", "hill", "flores", "doe", "schmidt", "okafor", "kowalski",
    ]
    static let firstDisplayNames = firstNames.map { $0.prefix(1).uppercased() + $0.dropFirst() }
    static let lastDisplayNames = lastNames.map { $0.prefix(1).uppercased() + $0.dropFirst() }
    static let domains = [
        "gmail.com", "gmail.com", "gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "proton.me",
        "example.com", "aol.com",
    ]
    /// analytics.js contexts: (library version, locale, user agent); the last is the shop kiosks'.
    static let analyticsContexts = [
        ("5.2.0", "en-US", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0"),
        ("5.2.0", "en-US", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4"),
        ("5.2.0", "en-GB", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"),
        ("5.1.3", "en-US", "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari"),
        ("5.2.0", "de-DE", "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"),
        ("5.2.0", "en-US", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) StoreKiosk/2.3"),
    ].map { #"{"library":{"name":"analytics.js","version":"\#($0.0)"},"locale":"\#($0.1)","userAgent":"\#($0.2)"}"# }
    static let webContexts = Array(analyticsContexts.dropLast())
    static let kioskContext = analyticsContexts[analyticsContexts.count - 1]
    /// Mobile contexts: (app version, device type, model, library, library version, OS, OS version).
    static let iosContext = appContext("4.12.0", "ios", "iPhone15,2", "analytics-swift", "1.5.11", "iOS", "17.4")
    static let androidContext = appContext("4.11.2", "android", "Pixel 8", "analytics-kotlin", "1.16.0", "Android", "14")
    static let emailContext = #"{"library":{"name":"esp-webhooks","version":"1.4.0"}}"#
    static let shopContext = #"{"library":{"name":"pos-connector","version":"3.0.2"}}"#
    static let pages: [(name: String, properties: String)] = [
        ("Home", #"{"path":"/","title":"Tributary Outfitters","url":"https://shop.example.com/"}"#),
        ("Category", #"{"path":"/c/shoes","title":"Shoes","url":"https://shop.example.com/c/shoes"}"#),
        ("Category", #"{"path":"/c/outdoor","title":"Outdoor","url":"https://shop.example.com/c/outdoor"}"#),
        (
            "Search",
            #"{"path":"/search","search":"?q=rain+jacket","title":"Search","url":"https://shop.example.com/search?q=rain+jacket"}"#
        ),
        ("Cart", #"{"path":"/cart","title":"Your cart","url":"https://shop.example.com/cart"}"#),
        ("Sale", #"{"path":"/sale","referrer":"https://www.google.com/","title":"Sale","url":"https://shop.example.com/sale"}"#),
    ]
    static let products = [
        #"{"product_id":"sku-100","name":"Trail Shoes","category":"shoes","price":89.0,"currency":"USD"}"#,
        #"{"product_id":"sku-200","name":"Rain Jacket","category":"outdoor","price":129.0,"currency":"USD"}"#,
        #"{"product_id":"sku-300","name":"Coffee Grinder","category":"kitchen","price":59.5,"currency":"USD"}"#,
        #"{"product_id":"sku-400","name":"Wool Socks","category":"shoes","price":14.0,"currency":"USD"}"#,
        #"{"product_id":"sku-500","name":"Headlamp \"Lumen 300\"","category":"outdoor","price":34.99,"currency":"USD"}"#,
    ]
    static let screens = ["Home", "Product Detail", "Cart", "Orders", "Search", "Account"]
    static let campaigns = (1...24).map { #"{"campaign_id":"cmp-\#($0)","subject":"Week \#($0): new arrivals"}"# }
    static let junkAnonymousIDs = ["anonymous", "undefined", "null", "0", "00000000-0000-0000-0000-000000000000"]
    /// `"email": ...` members: empty, "null", "undefined", 1000 characters, control characters, a number, an object.
    static let junkEmails = [
        #""email":"""#, #""email":"null""#, #""email":"undefined""#,
        "\"email\":\"" + String(repeating: "x", count: 988) + "@example.com\"",
        "\"email\":" + SyntheticPeople.jsonQuoted("a\u{1}b@x.com"),
        "\"email\":" + SyntheticPeople.jsonQuoted("jo\u{7}\u{1b}e@x.com"),
        #""email":12345"#, #""email":{"address":"someone@example.com"}"#,
    ]
}
