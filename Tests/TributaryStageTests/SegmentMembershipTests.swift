import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryFixtures
@testable import TributaryModel
@testable import TributarySegments

/// Segments compiled by ``SegmentCompiler`` and run on real PostgreSQL, against memberships computed here in Swift from
/// the same data, written from the documented semantics (not from the SQL); then membership history and real-time
/// re-evaluation.
@Suite struct SegmentMembershipTests {
    typealias F = ProfileFixture

    static let day: Int64 = 86_400_000_000

    // MARK: - The data as the database holds it

    /// One event of a profile, as read back from `cdp.events`.
    struct StoredEvent {
        var event: String?
        var type: String
        var properties: JSONValue
        /// Microseconds since the epoch (exact, as PostgreSQL holds it).
        var micros: Int64
        var seq: Int64

        /// Strictly after `other` by (timestamp, seq).
        func isAfter(_ other: StoredEvent) -> Bool { (micros, seq) > (other.micros, other.seq) }
    }

    /// One row of `cdp.profile_data` with the profile's events.
    struct StoredProfile {
        var id: UUID
        var traits: JSONValue
        var computed: JSONValue
        var events: [StoredEvent]
    }

    /// Reads every profile and its events back (identity resolution and trait merging stay the database's; only the
    /// segment logic is recomputed here).
    static func load(_ client: PostgresClient) async throws -> [StoredProfile] {
        var events: [UUID: [StoredEvent]] = [:]
        for row in try await client.query(
            """
            SELECT profile_id, event, type, properties::text, (extract(epoch FROM timestamp) * 1000000)::bigint, seq
            FROM cdp.events WHERE profile_id IS NOT NULL
            """)
        {
            let (profile, name, type, properties, micros, seq) = try row.decode(
                (UUID, String?, String, String, Int64, Int64).self)
            events[profile, default: []].append(
                StoredEvent(
                    event: name, type: type, properties: try JSONParser.parse(Array(properties.utf8)), micros: micros, seq: seq))
        }
        return try await client.query("SELECT profile_id, traits::text, computed::text FROM cdp.profile_data").map { row in
            let (id, traits, computed) = try row.decode((UUID, String, String).self)
            return StoredProfile(
                id: id, traits: try JSONParser.parse(Array(traits.utf8)), computed: try JSONParser.parse(Array(computed.utf8)),
                events: events[id] ?? [])
        }
    }

    // MARK: - The semantics, in Swift

    /// Segment membership computed from the specification.
    struct Oracle {
        let definitions: SegmentDefinitions
        /// The moment windows end at, in microseconds.
        let now: Int64

        func members(_ name: String, _ profiles: [StoredProfile]) -> Set<UUID> {
            Set(profiles.filter { profile in definitions[name]!.conditions.allSatisfy { holds($0, profile) } }.map(\.id))
        }

        /// Whether the condition holds; "unknown" (a value missing) is false, so `Not` of it is true.
        func holds(_ condition: SegmentCondition, _ profile: StoredProfile) -> Bool {
            switch condition.node {
            case .trait(let key, let op, let value): return Self.compare(profile.traits[key], op, value)
            case .computed(let name, let op, let value): return Self.compare(profile.computed[name], op, value)
            case .allOf(let all): return all.allSatisfy { holds($0, profile) }
            case .anyOf(let any): return any.contains { holds($0, profile) }
            case .not(let inner): return !holds(inner, profile)
            case .segment(let name): return definitions[name]!.conditions.allSatisfy { holds($0, profile) }
            case .event(let condition): return event(condition, profile)
            case .funnel(let funnel): return self.funnel(funnel, profile)
            case .notSince(let event, let since):
                let latest = profile.events.filter { matches($0, since) }.max { $1.isAfter($0) }
                guard let latest else { return false }
                return !profile.events.contains { matches($0, event) && $0.isAfter(latest) }
            // The generated profiles have no scores: a prediction never holds.
            case .prediction: return false
            }
        }

        func matches(_ stored: StoredEvent, _ event: Event) -> Bool {
            switch event.name {
            case "$page": if stored.type != "page" { return false }
            case "$screen": if stored.type != "screen" { return false }
            default: if stored.event != event.name { return false }
            }
            if let window = event.within, !(stored.micros > now - Int64(window.days) * SegmentMembershipTests.day) {
                return false
            }
            return (event.where ?? []).allSatisfy { Self.compare(stored.properties[$0.property], $0.op, $0.value) }
        }

        func event(_ condition: EventCondition, _ profile: StoredProfile) -> Bool {
            let matching = profile.events.filter { matches($0, condition.event) }
            let numbers = matching.compactMap { event -> Decimal? in
                guard let property = condition.property, case .number(let text)? = event.properties[property] else { return nil }
                return Decimal(string: text)!
            }
            let sum = numbers.reduce(Decimal(0), +)
            let measure: Decimal?
            switch condition.aggregate {
            case .count: measure = Decimal(matching.count)
            case .sum: measure = sum
            case .average: measure = numbers.isEmpty ? nil : sum / Decimal(numbers.count)
            case .min: measure = numbers.min()
            case .max: measure = numbers.max()
            }
            guard let measure else { return false }
            return Self.order(measure, condition.op, Self.decimal(condition.value))
        }

        func funnel(_ funnel: FunnelCondition, _ profile: StoredProfile) -> Bool {
            let span = Int64(funnel.within.days) * SegmentMembershipTests.day
            func chain(from previous: StoredEvent, first: StoredEvent, step: Int) -> Bool {
                if step == funnel.steps.count { return true }
                return profile.events.contains { next in
                    next.isAfter(previous) && next.micros <= first.micros + span && matches(next, funnel.steps[step])
                        && chain(from: next, first: first, step: step + 1)
                }
            }
            return profile.events.contains { first in matches(first, funnel.steps[0]) && chain(from: first, first: first, step: 1)
            }
        }

        /// A value of a JSON object (nil: absent) against a condition.
        static func compare(_ value: JSONValue?, _ op: PropertyCondition.Operator, _ operand: ConditionValue?) -> Bool {
            let present = value.flatMap { $0 == .null ? nil : $0 }
            switch op {
            case .exists: return present != nil
            case .notExists: return present == nil
            case .equal: return value.map { equal($0, operand!) } ?? false
            case .notEqual: return !(value.map { equal($0, operand!) } ?? false)
            case .in:
                guard let value, case .list(let items) = operand! else { return false }
                return items.contains { equal(value, $0) }
            case .contains:
                guard case .string(let text)? = value, case .string(let part) = operand! else { return false }
                return substring(part, of: text)
            case .greater, .greaterOrEqual, .less, .lessOrEqual:
                switch operand! {
                case .number(let number):
                    guard case .number(let text)? = value else { return false }
                    return order(Decimal(string: text)!, op, decimal(number))
                case .string(let iso):
                    guard case .string(let text)? = value, let moment = timestamp(text) else { return false }
                    return order(moment, op, timestamp(iso)!)
                default: return false
                }
            }
        }

        /// JSON equality: numbers by value, strings and booleans exactly, nothing else equal to a literal.
        static func equal(_ value: JSONValue, _ literal: ConditionValue) -> Bool {
            switch (value, literal) {
            case (.string(let a), .string(let b)): return Array(a.utf8) == Array(b.utf8)
            case (.number(let a), .number(let b)): return Decimal(string: a)! == decimal(b)
            case (.bool(let a), .bool(let b)): return a == b
            default: return false
            }
        }

        static func order<T: Comparable>(_ a: T, _ op: PropertyCondition.Operator, _ b: T) -> Bool {
            switch op {
            case .equal: a == b
            case .notEqual: a != b
            case .greater: a > b
            case .greaterOrEqual: a >= b
            case .less: a < b
            case .lessOrEqual: a <= b
            default: false
            }
        }

        static func decimal(_ number: Double) -> Decimal { Decimal(string: "\(number)")! }

        static func substring(_ part: String, of text: String) -> Bool {
            let needle = Array(part.utf8), haystack = Array(text.utf8)
            guard needle.count <= haystack.count else { return false }
            return (0...(haystack.count - needle.count)).contains { Array(haystack[$0..<$0 + needle.count]) == needle }
        }

        /// `YYYY-MM-DD`, optionally `THH:MM:SS`, fractional seconds and `Z` or `±HH:MM`: microseconds since the epoch
        /// (a plain date is midnight UTC), or nil when it is not such a moment.
        static func timestamp(_ text: String) -> Int64? {
            let bytes = Array(text.utf8)
            var index = 0
            func digits(_ count: Int) -> Int? {
                guard index + count <= bytes.count else { return nil }
                var value = 0
                for byte in bytes[index..<index + count] {
                    guard (48...57).contains(byte) else { return nil }
                    value = value * 10 + Int(byte - 48)
                }
                index += count
                return value
            }
            func skip(_ character: Character) -> Bool {
                guard index < bytes.count, bytes[index] == character.asciiValue! else { return false }
                index += 1
                return true
            }
            guard let year = digits(4), skip("-"), let month = digits(2), skip("-"), let dayOfMonth = digits(2) else {
                return nil
            }
            var hour = 0, minute = 0, second = 0, micros = 0, offset = 0
            if index < bytes.count {
                guard skip("T"), let h = digits(2), skip(":"), let m = digits(2), skip(":"), let s = digits(2) else { return nil }
                (hour, minute, second) = (h, m, s)
                if skip(".") {
                    var scale = 100_000
                    while index < bytes.count, (48...57).contains(bytes[index]) {
                        micros += Int(bytes[index] - 48) * scale
                        scale /= 10
                        index += 1
                    }
                }
                if skip("Z") {
                    offset = 0
                } else {
                    let sign = skip("+") ? 1 : (skip("-") ? -1 : 0)
                    guard sign != 0, let oh = digits(2), skip(":"), let om = digits(2) else { return nil }
                    offset = sign * (oh * 3600 + om * 60)
                }
                guard index == bytes.count else { return nil }
            }
            guard (1...12).contains(month), hour < 24, minute < 60, second < 60 else { return nil }
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = TimeZone(identifier: "UTC")!
            guard
                let range = calendar.range(
                    of: .day, in: .month, for: calendar.date(from: DateComponents(year: year, month: month, day: 1))!),
                range.contains(dayOfMonth)
            else { return nil }
            let date = calendar.date(
                from: DateComponents(year: year, month: month, day: dayOfMonth, hour: hour, minute: minute, second: second))!
            return (Int64(date.timeIntervalSince1970.rounded()) - Int64(offset)) * 1_000_000 + Int64(micros)
        }
    }

    // MARK: - Generated data

    static let computedDefinitions = ComputedTraitDefinitions(
        computedTraits: [
            .count("orders", of: "Order Completed"),
            .sum("lifetime_value", Property<Double>("revenue"), of: "Order Completed"),
            .last("last_category", Property<String>("category"), of: "Product Viewed"),
            .count("views_30d", of: "Product Viewed", within: .days(30)),
        ], rfm: RFMSettings(enabled: false))

    /// `2026-01-02T03:04:05.678Z`, or with an offset (minutes east of UTC), or a plain date.
    static func iso(_ date: Date, offset: Int = 0, millis: Bool = false, dateOnly: Bool = false) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: offset * 60)!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .nanosecond], from: date)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let datePart = "\(c.year!)-\(two(c.month!))-\(two(c.day!))"
        if dateOnly { return datePart }
        var text = "\(datePart)T\(two(c.hour!)):\(two(c.minute!)):\(two(c.second!))"
        if millis {
            let ms = c.nanosecond! / 1_000_000
            text += "." + (ms < 10 ? "00" : ms < 100 ? "0" : "") + "\(ms)"
        }
        if offset == 0 { return text + "Z" }
        return text + (offset > 0 ? "+" : "-") + two(abs(offset) / 60) + ":" + two(abs(offset) % 60)
    }

    /// Random people: identify calls with numbers, strings, booleans, ISO timestamps, arrays and null removals; track
    /// calls of three names with numeric, string and boolean properties; page calls; some anonymous visitors, some
    /// linking an anonymous id to their user id. Times lie a quarter to three quarters into a day before `now`, so
    /// windows of whole days never fall near an event.
    static func generate(seed: UInt64, people: Int, now: Date) -> [IncomingEvent] {
        var random = SeededRandom(seed: seed)
        var events: [IncomingEvent] = []
        func daysAgo(_ days: Double) -> Date { now.addingTimeInterval(-days * 86_400) }
        func time(within days: Int = 90) -> Date { daysAgo(Double(random.below(days)) + 0.25 + 0.5 * random.unit()) }
        func money(_ maxCents: Int) -> String {
            let cents = random.below(maxCents)
            return "\(cents / 100).\(cents % 100 < 10 ? "0" : "")\(cents % 100)"
        }
        let plans = ["free", "pro", "enterprise", "trial"]
        let cities = ["Paris", "Berlin", "New York", "Newark", "Lyon", "new delhi"]
        let categories = ["shoes", "outdoor", "kitchen", "books"]
        let paths = ["/pricing", "/docs", "/blog/launch", "/blog/tips", "/"]
        for person in 0..<people {
            let user = "u\(person)", anonymous = "a\(person)"
            let style = random.below(10)  // 0: anonymous only; 1, 2: anonymous, then linked to the user id
            func who() -> (user: String?, anonymous: String?) {
                switch style {
                case 0: return (nil, anonymous)
                case 1, 2: return random.chance(0.5) ? (nil, anonymous) : (user, nil)
                default: return (user, nil)
                }
            }
            func traits() -> String {
                var parts: [String] = []
                if random.chance(0.6) {
                    parts.append(#""plan": "# + (random.chance(0.12) ? "null" : "\"\(random.pick(plans))\""))
                }
                if random.chance(0.6) {
                    let age = 18 + random.below(52)
                    let text =
                        switch random.below(10) {
                        case 0: "\"\(age)\""
                        case 1: random.pick(["30.0", "25", "35.0", "30.5", "41"])
                        case 2: "null"
                        default: "\(age)"
                        }
                    parts.append(#""age": \#(text)"#)
                }
                if random.chance(0.5) { parts.append(#""score": \#(random.chance(0.1) ? "\"high\"" : money(10_000))"#) }
                if random.chance(0.5) { parts.append(#""vip": \#(random.pick(["true", "false", "false", "\"true\"", "null"]))"#) }
                if random.chance(0.5) { parts.append(#""city": "\#(random.pick(cities))""#) }
                if random.chance(0.5) {
                    // Avoid plain dates near the borders the segments use (30, 45, 60 and 90 days ago).
                    var days = Double(random.below(120))
                    while [29, 30, 44, 45, 59, 60, 89, 90].contains(Int(days)) { days = Double(random.below(120)) }
                    let moment = daysAgo(days + 0.25 + 0.5 * random.unit())
                    let text =
                        switch random.below(8) {
                        case 0: "\"\(iso(moment, offset: 120))\""
                        case 1: "\"\(iso(moment, offset: -300, millis: true))\""
                        case 2: "\"\(iso(moment, dateOnly: true))\""
                        case 3: random.pick(["\"2026-13-45T00:00:00Z\"", "\"soon\"", "12345", "\"2026-02-30\""])
                        case 4: "\"\(iso(moment, millis: true))\""
                        default: "\"\(iso(moment))\""
                        }
                    parts.append(#""signed_up_at": \#(text)"#)
                }
                if random.chance(0.1) { parts.append(#""tags": ["a", "b"]"#) }
                return "{\(parts.joined(separator: ", "))}"
            }
            if style != 0 || random.chance(0.5) {
                for _ in 0..<(1 + random.below(3)) {
                    let (u, a) = style == 0 ? (nil, anonymous) : (user, nil)
                    events.append(F.event(.identify, user: u, anonymous: a, traits: traits(), at: time()))
                }
            }
            if style == 1 || style == 2 {
                events.append(F.event(.identify, user: user, anonymous: anonymous, traits: traits(), at: time()))
            }
            func order(at moment: Date) -> IncomingEvent {
                var properties: [String] = []
                switch random.below(10) {
                case 0: properties.append(#""revenue": "n/a""#)
                case 1: break
                default: properties.append(#""revenue": \#(money(30_000))"#)
                }
                if let currency = random.pick(["EUR", "USD", "GBP", nil]) { properties.append(#""currency": "\#(currency)""#) }
                switch random.below(10) {
                case 0, 1, 2: properties.append(#""coupon": true"#)
                case 3, 4: properties.append(#""coupon": null"#)
                default: break
                }
                let (u, a) = who()
                return F.event(
                    .track, user: u, anonymous: a, event: "Order Completed",
                    properties: "{\(properties.joined(separator: ", "))}", at: moment)
            }
            func view(at moment: Date) -> IncomingEvent {
                var properties: [String] = []
                if random.chance(0.85) { properties.append(#""category": "\#(random.pick(categories))""#) }
                if random.chance(0.8) { properties.append(#""price": \#(money(10_000))"#) }
                let (u, a) = who()
                return F.event(
                    .track, user: u, anonymous: a, event: "Product Viewed", properties: "{\(properties.joined(separator: ", "))}",
                    at: moment)
            }
            func cart(at moment: Date) -> IncomingEvent {
                var properties = [#""price": \#(money(5_000))"#, #""sku": "SKU-\#(random.below(20))""#]
                if random.chance(0.4) {
                    let promo = now.addingTimeInterval((Double(random.below(20)) - 9.5) * 86_400)
                    properties.append(#""promo_until": "\#(iso(promo, millis: random.chance(0.5)))""#)
                }
                let (u, a) = who()
                return F.event(
                    .track, user: u, anonymous: a, event: "Added to Cart", properties: "{\(properties.joined(separator: ", "))}",
                    at: moment)
            }
            for _ in 0..<random.below(13) {
                switch random.below(3) {
                case 0: events.append(order(at: time()))
                case 1: events.append(view(at: time()))
                default: events.append(cart(at: time()))
                }
            }
            for _ in 0..<random.below(5) {
                let (u, a) = who()
                events.append(
                    F.event(.page, user: u, anonymous: a, properties: #"{"path": "\#(random.pick(paths))"}"#, at: time()))
            }
            // A cart and an order at the same moment, received in either order: only (timestamp, seq) orders them.
            if random.chance(0.2) {
                let moment = time()
                let pair = [cart(at: moment), order(at: moment)]
                events.append(contentsOf: random.chance(0.5) ? pair : pair.reversed())
            }
            // A view, then an order exactly 7 days later or a second more: on and just past a 7-day funnel's edge.
            if random.chance(0.15) {
                let moment = daysAgo(Double(8 + random.below(80)) + 0.25 + 0.5 * random.unit())
                events.append(view(at: moment))
                events.append(order(at: moment.addingTimeInterval(7 * 86_400 + (random.chance(0.5) ? 0 : 1))))
            }
        }
        // Received in an order unrelated to time.
        for index in stride(from: events.count - 1, to: 0, by: -1) {
            events.swapAt(index, random.below(index + 1))
        }
        return events
    }

    /// Every kind of condition and operator, including nested logic, references, conditions that hold without
    /// events, funnels of two and three steps and `notSince` with a window.
    static func segments(now: Date) -> SegmentDefinitions {
        let plan = Trait<String>("plan"), age = Trait<Int>("age"), score = Trait<Double>("score"), vip = Trait<Bool>("vip")
        let city = Trait<String>("city"), signedUp = Trait<Date>("signed_up_at"), tags = Trait<JSONArray>("tags")
        let revenue = Property<Double>("revenue"), currency = Property<String>("currency"), coupon = Property<Bool>("coupon")
        let category = Property<String>("category"), price = Property<Double>("price"), path = Property<String>("path")
        let sku = Property<String>("sku")
        let orders = Computed<Int>("orders"), value = Computed<Double>("lifetime_value"), last = Computed<String>("last_category")
        let views30 = Computed<Int>("views_30d")
        func ago(_ days: Double) -> Date { now.addingTimeInterval(-days * 86_400) }
        let promo = PropertyCondition(property: "promo_until", op: .greater, value: .string(iso(now, millis: true)))
        return SegmentDefinitions([
            Segment("t_eq") { plan == "pro" },
            Segment("t_ne") { plan != "free" },
            Segment("t_num_eq") { age == 30 },
            Segment("t_gt") { age > 40 },
            Segment("t_le") { age <= 30 },
            Segment("t_range") {
                score >= 25.5; score < 75.0
            },
            Segment("t_bool") { vip == true },
            Segment("t_bool_ne") { vip != false },
            Segment("t_in") { plan.isIn(["pro", "enterprise"]) },
            Segment("t_in_num") { age.isIn([25, 30, 41]) },
            Segment("t_contains") { city.contains("New") },
            Segment("t_exists") { city.exists },
            Segment("t_array") { tags.exists },
            Segment("t_null") { plan.isNull },
            Segment("t_date_after") { signedUp > ago(30) },
            Segment("t_date_range") {
                signedUp >= ago(90); signedUp < ago(45)
            },
            Segment("t_date_le") { signedUp <= ago(60) },
            Segment("c_ge") { orders >= 2 },
            Segment("c_gt") { value > 150.0 },
            Segment("c_eq") { views30 == 0 },
            Segment("c_le") {
                views30 <= 1; orders > 0
            },
            Segment("c_in") { last.isIn(["shoes", "books"]) },
            Segment("c_ne") { last != "kitchen" },
            Segment("c_contains") { last.contains("oo") },
            Segment("c_null") { last.isNull },
            Segment("e_window") { Event("Order Completed", within: .days(30)).count >= 2 },
            Segment("e_where") {
                Event("Order Completed") {
                    revenue > 50.0; currency == "EUR"
                }.occurred
            },
            Segment("e_where_ne") {
                Event("Order Completed") {
                    currency != "EUR"; coupon.exists
                }.occurred
            },
            Segment("e_where_in") {
                Event("Product Viewed") {
                    category.isIn(["shoes", "books"]); price.isNull
                }.occurred
            },
            Segment("e_where_null") {
                Event("Order Completed") {
                    coupon.isNull; revenue <= 100.0
                }.count >= 2
            },
            Segment("e_where_contains") { Event("Added to Cart", within: .days(45)) { sku.contains("SKU-1") }.occurred },
            Segment("e_where_iso") { Event("Added to Cart") { promo }.occurred },
            Segment("e_never") { Event("Order Completed").never },
            Segment("e_lt2") { Event("Product Viewed").count < 2 },
            Segment("e_eq2") { Event("Product Viewed").count == 2 },
            Segment("e_ne1") { Event("Added to Cart").count != 1 },
            Segment("e_le1_window") { Event("Added to Cart", within: .days(20)).count <= 1 },
            Segment("e_sum_lt") { Event("Order Completed").sum(revenue) < 100.0 },
            Segment("e_sum_eq0") { Event("Order Completed").sum(revenue) == 0.0 },
            Segment("e_sum_gt") { Event("Order Completed", within: .days(60)).sum(revenue) > 200.0 },
            Segment("e_avg") { Event("Order Completed").average(revenue) > 120.0 },
            Segment("e_min") { Event("Added to Cart").min(price) < 10.0 },
            Segment("e_max") { Event("Order Completed").max(revenue) >= 200.0 },
            Segment("e_max_ne") { Event("Product Viewed") { category == "shoes" }.max(price) != 50.0 },
            Segment("e_page") { Event("$page", within: .days(14)) { path == "/pricing" }.occurred },
            Segment("e_page_count") { Event("$page") { path.contains("/blog") }.count >= 2 },
            // Sibling conditions on the same events share one pass in the view form.
            Segment("e_merged") {
                Event("Order Completed", within: .days(60)).count >= 2
                Event("Order Completed", within: .days(60)).sum(revenue) > 150.0
                Event("Order Completed", within: .days(60)).occurred
                Event("Product Viewed").occurred
            },
            Segment("e_merged_nested") {
                AnyOf {
                    AllOf {
                        Event("Order Completed").count >= 1; Event("Order Completed").max(revenue) < 100.0
                    }
                    AllOf {
                        Event("Order Completed").count == 0; Event("Product Viewed").count >= 3
                    }
                }
            },
            Segment("f_two") {
                Funnel(within: .days(7)) {
                    Event("Product Viewed"); Event("Order Completed")
                }
            },
            Segment("f_three") {
                Funnel(within: .days(14)) {
                    Event("$page"); Event("Added to Cart"); Event("Order Completed") { revenue > 20.0 }
                }
            },
            Segment("f_same") {
                Funnel(within: .days(3)) {
                    Event("Product Viewed"); Event("Product Viewed")
                }
            },
            Segment("f_tie") {
                Funnel(within: .days(1)) {
                    Event("Added to Cart"); Event("Order Completed")
                }
            },
            Segment("f_window") {
                Funnel(within: .days(10)) {
                    Event("Product Viewed", within: .days(45)); Event("Added to Cart")
                }
            },
            Segment("ns_window") { Event("Order Completed").notSince(Event("Added to Cart", within: .days(30))) },
            Segment("ns_where") {
                Event("Order Completed") { revenue > 10.0 }.notSince(Event("Product Viewed") { category == "shoes" })
            },
            Segment("ns_event_window") { Event("Order Completed", within: .days(20)).notSince(Event("Product Viewed")) },
            Segment("l_any") {
                AnyOf {
                    plan == "pro"; orders >= 3; vip == true
                }
            },
            Segment("l_nested") {
                AnyOf {
                    AllOf {
                        age > 30; city.exists
                    }
                    Not { plan.isIn(["pro", "free"]) }
                }
                Event("Product Viewed").occurred
            },
            Segment("l_not_unknown") { Not { age > 40 } },
            Segment("l_not_all") {
                Not {
                    plan == "pro"; Event("Order Completed").average(revenue) > 50.0
                }
            },
            Segment("l_not_zero") { Not { Event("Order Completed").sum(revenue) < 100.0 } },
            Segment("l_deep") {
                Not {
                    AnyOf {
                        Not { vip == true }
                        AllOf {
                            score < 20.0; Event("$page").never
                        }
                    }
                }
            },
            Segment("l_any_events") {
                AnyOf {
                    Funnel(within: .days(2)) {
                        Event("Added to Cart"); Event("Added to Cart")
                    }; Event("$page").count >= 4
                }
            },
            Segment("s_ref") {
                InSegment("t_eq"); Event("Order Completed").occurred
            },
            Segment("s_ref_logic") {
                Not { InSegment("e_window") };
                AnyOf {
                    InSegment("t_bool"); InSegment("ns_window")
                }
            },
            Segment("s_ref_chain") {
                InSegment("s_ref_logic"); Not { InSegment("l_any") }
            },
        ])
    }

    // MARK: - Queries

    /// Profile ids a query selects, read with the session time zone pinned to UTC (so `interval '1 day'` is 24 hours).
    static func ids(_ client: PostgresClient, _ query: PostgresQuery) async throws -> Set<UUID> {
        try await client.withTransaction { tx in
            try await tx.execute("SET LOCAL TimeZone = 'UTC'")
            return Set(try await tx.query(query).map { try $0.decode(UUID.self) })
        }
    }

    static func difference(_ sql: Set<UUID>, _ swift: Set<UUID>) -> String {
        func list(_ ids: Set<UUID>) -> String {
            ids.map { $0.uuidString.lowercased() }.sorted().prefix(8).joined(separator: ", ")
        }
        return "only in SQL (\(sql.subtracting(swift).count)): [\(list(sql.subtracting(swift)))]; "
            + "only in Swift (\(swift.subtracting(sql).count)): [\(list(swift.subtracting(sql)))]"
    }

    /// The segment's members three ways (the view's query, the per-profile form over every profile, and the view
    /// itself when applied) against the Swift computation.
    static func check(
        _ definitions: SegmentDefinitions, now: Date, profiles: [StoredProfile], client: PostgresClient, views: Bool,
        nonTrivial: Bool
    ) async throws {
        let compiler = SegmentCompiler(definitions, clock: .fixed(now))
        let oracle = Oracle(definitions: definitions, now: Int64(now.timeIntervalSince1970) * 1_000_000)
        let all = profiles.map(\.id)
        for segment in definitions.segments {
            let name = segment.name
            let expected = oracle.members(name, profiles)
            // Compared as a Bool so a failure shows the segment and the differing ids, not every member.
            // The query with its binds, as the per-profile form runs; the applied view below is its inlined form.
            let selected = try await ids(client, try compiler.select(name))
            let viewQueryAgrees = selected == expected
            #expect(viewQueryAgrees, "\(name), view query: \(difference(selected, expected))")
            let perProfile = try await ids(client, try compiler.perProfile(name, profiles: all))
            let perProfileAgrees = perProfile == expected
            #expect(perProfileAgrees, "\(name), per-profile form: \(difference(perProfile, expected))")
            if views {
                let view = try await ids(client, "SELECT profile_id FROM \(unescaped: try compiler.viewName(name))")
                let viewAgrees = view == expected
                #expect(viewAgrees, "\(name), applied view: \(difference(view, expected))")
            }
            if nonTrivial {
                #expect(
                    0 < expected.count && expected.count < all.count, "\(name) selects \(expected.count) of \(all.count) profiles"
                )
            }
        }
    }

    static func wholeSecond(_ date: Date) -> Date { Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down)) }

    // MARK: - Tests

    @Test(arguments: [UInt64(20_260_528), 41])
    func everyConditionKindMatchesAnIndependentComputation(seed: UInt64) async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.apply(Self.computedDefinitions, client)
            let now = Self.wholeSecond(Date())
            let sent = Self.generate(seed: seed, people: 240, now: now)
            // In several deliveries, each resolved by both stages.
            for start in stride(from: 0, to: sent.count, by: 900) {
                try await F.ingest(Array(sent[start..<min(start + 900, sent.count)]), client, clock: now)
            }
            let profiles = try await Self.load(client)
            #expect(profiles.count > 200)
            let merged = try await client.query("SELECT count(*) FROM cdp.profile_merge_log").scalar(Int.self)
            #expect(merged > 0, "the data links anonymous visitors to users")
            let definitions = Self.segments(now: now)
            try definitions.validate(catalog: nil, computed: Self.computedDefinitions)
            // Applied, the views read now(): the same moment give or take the test's seconds, far from any border.
            try await SegmentStore(client: client, logger: TestDatabase.logger).apply(definitions)
            try await Self.check(definitions, now: now, profiles: profiles, client: client, views: true, nonTrivial: true)
        }
    }

    /// Count thresholds at or below zero and fractional ones: `count >= 0`, `> -1`, `!= -1`, `!= 0.5` hold for every
    /// profile (with or without orders), `count < 0`, `<= -1`, `== 0.5` for none. The view form and the per-profile
    /// form (which real-time segments use) must both agree with that.
    @Test func eventCountThresholdsAtAndBelowZero() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let now = Self.wholeSecond(Date())
            try await F.ingest(Self.generate(seed: 7, people: 30, now: now), client, clock: now)
            let profiles = try await Self.load(client)
            let order = Event("Order Completed")
            let definitions = SegmentDefinitions([
                Segment("count_ge_0") { order.count >= 0 },
                Segment("count_gt_minus_1") { order.count > -1 },
                Segment("count_ne_minus_1") { order.count != -1 },
                Segment("count_ne_half") { EventMeasure<Double>(event: order, aggregate: .count, property: nil) != 0.5 },
                Segment("count_lt_0") { order.count < 0 },
                Segment("count_le_minus_1") { order.count <= -1 },
                Segment("count_eq_half") { EventMeasure<Double>(event: order, aggregate: .count, property: nil) == 0.5 },
                Segment("count_le_half") { EventMeasure<Double>(event: order, aggregate: .count, property: nil) <= 0.5 },
                Segment("count_ge_half") { EventMeasure<Double>(event: order, aggregate: .count, property: nil) >= 0.5 },
            ])
            try definitions.validate(catalog: nil, computed: nil)
            try await Self.check(definitions, now: now, profiles: profiles, client: client, views: false, nonTrivial: false)
        }
    }

    /// Refreshes record one entry per member, then exactly the entries and exits a change of data causes; the history
    /// view pairs them; a refresh with nothing changed records nothing; removing a segment records its members' exits.
    @Test func refreshesRecordEntriesAndExits() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.ingest(
                [
                    F.event(user: "u1", traits: #"{"plan": "pro"}"#, at: F.day(1)),
                    F.event(.track, user: "u1", event: "Product Viewed", at: F.day(2)),
                    F.event(user: "u2", traits: #"{"plan": "free"}"#, at: F.day(1)),
                    F.event(.track, user: "u2", event: "Order Completed", properties: #"{"revenue": 20}"#, at: F.day(2)),
                    F.event(user: "u3", traits: #"{"plan": "pro"}"#, at: F.day(1)),
                    F.event(.track, user: "u3", event: "Order Completed", properties: #"{"revenue": 30}"#, at: F.day(2)),
                    F.event(.track, user: "u3", event: "Order Completed", properties: #"{"revenue": 40}"#, at: F.day(3)),
                    F.event(user: "u4", traits: #"{"plan": "trial"}"#, at: F.day(1)),
                ], client)
            let definitions = SegmentDefinitions([
                Segment("buyers") { Event("Order Completed").occurred },
                Segment("non_buyers") { Event("Order Completed").never },
                Segment("pro") { Trait<String>("plan") == "pro" },
                Segment("pro_buyers") {
                    InSegment("pro"); InSegment("buyers")
                },
            ])
            let store = SegmentStore(client: client, logger: TestDatabase.logger)
            let membership = SegmentMembership(client: client, logger: TestDatabase.logger)
            let applied = try await store.apply(definitions)
            #expect(applied.map(\.kind) == [.added, .added, .added, .added])

            func profile(_ user: String) async throws -> UUID {
                try await client.query("SELECT profile_id FROM cdp.identities WHERE kind = 'user_id' AND value = \(user)").scalar(
                    UUID.self)
            }
            func members(_ segment: String) async throws -> Set<UUID> {
                Set(
                    try await client.query("SELECT profile_id FROM cdp.segment_members WHERE segment = \(segment)").map {
                        try $0.decode(UUID.self)
                    })
            }
            func view(_ segment: String) async throws -> Set<UUID> {
                try await Self.ids(client, "SELECT profile_id FROM \(unescaped: try Segment.view(segment))")
            }
            func users(_ names: String...) async throws -> Set<UUID> {
                var result: Set<UUID> = []
                for name in names { result.insert(try await profile(name)) }
                return result
            }
            /// Changes after `change_id` as "segment user change reason", sorted.
            func changes(after mark: Int) async throws -> [String] {
                var names: [UUID: String] = [:]
                for user in ["u1", "u2", "u3", "u4", "u5"] {
                    if let id = try? await profile(user) { names[id] = user }
                }
                return try await client.query(
                    """
                    SELECT segment, profile_id, change, reason FROM cdp.segment_changes WHERE change_id > \(mark)
                    """
                ).map {
                    let (segment, id, change, reason) = try $0.decode((String, UUID, String, String).self)
                    return "\(segment) \(names[id] ?? id.uuidString) \(change) \(reason)"
                }.sorted()
            }
            func lastChange() async throws -> Int {
                try await client.query("SELECT coalesce(max(change_id), 0) FROM cdp.segment_changes").scalar(Int.self)
            }

            let first = try await membership.refresh()
            #expect(first.segments == 4 && first.entered == 7 && first.exited == 0 && first.members == 7)
            let expectedBefore: [String: Set<UUID>] = [
                "buyers": try await users("u2", "u3"), "non_buyers": try await users("u1", "u4"),
                "pro": try await users("u1", "u3"), "pro_buyers": try await users("u3"),
            ]
            for segment in definitions.segments.map(\.name) {
                #expect(try await members(segment) == expectedBefore[segment], "\(segment)")
                #expect(try await view(segment) == expectedBefore[segment], "\(segment)")
            }
            #expect(
                try await changes(after: 0) == [
                    "buyers u2 entered refresh", "buyers u3 entered refresh", "non_buyers u1 entered refresh",
                    "non_buyers u4 entered refresh",
                    "pro u1 entered refresh", "pro u3 entered refresh", "pro_buyers u3 entered refresh",
                ])

            // u1 buys; u3 moves to the free plan; u4 to pro; u5 arrives without orders.
            let mark = try await lastChange()
            try await F.ingest(
                [
                    F.event(.track, user: "u1", event: "Order Completed", properties: #"{"revenue": 10}"#, at: F.day(5)),
                    F.event(user: "u3", traits: #"{"plan": "free"}"#, at: F.day(5)),
                    F.event(user: "u4", traits: #"{"plan": "pro"}"#, at: F.day(5)),
                    F.event(user: "u5", traits: #"{"plan": "trial"}"#, at: F.day(5)),
                ], client)
            // Not real-time: nothing changes until the refresh.
            #expect(try await lastChange() == mark)
            #expect(try await members("buyers") == expectedBefore["buyers"])
            let second = try await membership.refresh()
            #expect(second.entered == 4 && second.exited == 3 && second.members == 8)
            #expect(
                try await changes(after: mark) == [
                    "buyers u1 entered refresh", "non_buyers u1 exited refresh", "non_buyers u5 entered refresh",
                    "pro u3 exited refresh", "pro u4 entered refresh", "pro_buyers u1 entered refresh",
                    "pro_buyers u3 exited refresh",
                ])
            let expectedAfter: [String: Set<UUID>] = [
                "buyers": try await users("u1", "u2", "u3"), "non_buyers": try await users("u4", "u5"),
                "pro": try await users("u1", "u4"), "pro_buyers": try await users("u1"),
            ]
            for segment in definitions.segments.map(\.name) {
                #expect(try await members(segment) == expectedAfter[segment], "\(segment)")
                #expect(try await view(segment) == expectedAfter[segment], "\(segment)")
            }

            // The history: one row per stay; open stays are exactly the current members.
            let history = try await client.query(
                """
                SELECT segment, profile_id, entered_at, exited_at FROM cdp.segment_history
                """
            ).map { try $0.decode((String, UUID, Date, Date?).self) }
            #expect(history.count == 11)
            for segment in definitions.segments.map(\.name) {
                #expect(Set(history.filter { $0.0 == segment && $0.3 == nil }.map(\.1)) == expectedAfter[segment], "\(segment)")
            }
            let u1 = try await profile("u1"), u3 = try await profile("u3")
            let closed = history.filter { $0.3 != nil }.map { "\($0.0) \($0.1 == u1 ? "u1" : $0.1 == u3 ? "u3" : "?")" }.sorted()
            #expect(closed == ["non_buyers u1", "pro u3", "pro_buyers u3"])
            #expect(history.allSatisfy { stay in stay.3.map { $0 > stay.2 } ?? true })

            // Nothing changed: nothing recorded.
            let settled = try await lastChange()
            let idle = try await membership.refresh()
            #expect(idle.entered == 0 && idle.exited == 0 && idle.members == 8)
            #expect(try await lastChange() == settled)

            // Removing a segment: its members exit with reason 'removed', its view is dropped.
            let removal = try await store.apply(SegmentDefinitions(Array(definitions.segments.prefix(3))))
            #expect(
                removal.map { "\($0.name) \($0.kind)" } == [
                    "buyers unchanged", "non_buyers unchanged", "pro unchanged", "pro_buyers removed",
                ])
            #expect(try await changes(after: settled) == ["pro_buyers u1 exited removed"])
            #expect(
                try await client.query("SELECT count(*) FROM cdp.segment_members WHERE segment = 'pro_buyers'").scalar(Int.self)
                    == 0)
            #expect(try await client.query("SELECT to_regclass('segments.pro_buyers') IS NULL").scalar(Bool.self))
            let open = try await client.query(
                "SELECT count(*) FROM cdp.segment_history WHERE segment = 'pro_buyers' AND exited_at IS NULL"
            )
            .scalar(Int.self)
            #expect(open == 0)
        }
    }

    /// `SegmentMembership.reevaluate` promises that "profiles merged away leave every segment": after the profile
    /// stage's batch that merges two profiles, no segment (real-time or scheduled) still lists the merged-away id.
    @Test func aMergedAwayProfileLeavesEverySegmentInTheMergingBatch() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let pro = Trait<String>("plan") == "pro"
            try await SegmentStore(client: client, logger: TestDatabase.logger).apply(
                SegmentDefinitions([
                    Segment("rt_pro", realtime: true) { pro }, Segment("scheduled_pro") { pro },
                ]))
            try await F.ingest([F.event(user: "u9", traits: #"{"plan": "pro"}"#, at: F.day(1))], client)
            try await F.ingest([F.event(anonymous: "a9", traits: #"{"plan": "pro"}"#, at: F.day(2))], client)
            func profile(_ kind: String, _ value: String) async throws -> UUID {
                try await client.query("SELECT profile_id FROM cdp.identities WHERE kind = \(kind) AND value = \(value)").scalar(
                    UUID.self)
            }
            func memberships(_ id: UUID) async throws -> [String] {
                try await client.query("SELECT segment FROM cdp.segment_members WHERE profile_id = \(id) ORDER BY segment").map {
                    try $0.decode(String.self)
                }
            }
            let before = [try await profile("user_id", "u9"), try await profile("anonymous_id", "a9")]
            try await SegmentMembership(client: client, logger: TestDatabase.logger).refresh()
            for id in before { #expect(try await memberships(id) == ["rt_pro", "scheduled_pro"]) }

            try await F.ingest([F.event(user: "u9", anonymous: "a9", at: F.day(3))], client)
            let survivor = try await profile("user_id", "u9")
            let mergedAway = try #require(before.first { $0 != survivor })
            #expect(
                try await client.query("SELECT count(*) FROM cdp.profile_data WHERE profile_id = \(mergedAway)").scalar(Int.self)
                    == 0)
            #expect(try await memberships(survivor) == ["rt_pro", "scheduled_pro"])
            let left = try await memberships(mergedAway)
            #expect(left == [], "the merged-away profile \(mergedAway) is still listed in \(left) after its merge was processed")
        }
    }

    /// Real-time segments follow each profile-stage batch without a refresh; a profile merged away leaves its segments.
    @Test func realTimeSegmentsFollowTheProfileStage() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.ingest(
                [
                    F.event(user: "u1", traits: #"{"plan": "free"}"#, at: F.day(1)),
                    F.event(.track, user: "u1", event: "Product Viewed", at: F.day(1.5)),
                    F.event(user: "u2", traits: #"{"plan": "pro"}"#, at: F.day(1)),
                ], client)
            let definitions = SegmentDefinitions([
                Segment("rt_abandoned", realtime: true) { Event("Order Completed").notSince(Event("Added to Cart")) },
                Segment("batch_abandoned") { Event("Order Completed").notSince(Event("Added to Cart")) },
                Segment("rt_pro", realtime: true) { Trait<String>("plan") == "pro" },
            ])
            try await SegmentStore(client: client, logger: TestDatabase.logger).apply(definitions)
            let membership = SegmentMembership(client: client, logger: TestDatabase.logger)
            try await membership.refresh()

            func profile(_ kind: String, _ value: String) async throws -> UUID {
                try await client.query("SELECT profile_id FROM cdp.identities WHERE kind = \(kind) AND value = \(value)").scalar(
                    UUID.self)
            }
            func memberships(_ id: UUID) async throws -> Set<String> {
                Set(
                    try await client.query("SELECT segment FROM cdp.segment_members WHERE profile_id = \(id)").map {
                        try $0.decode(String.self)
                    })
            }
            func lastChange() async throws -> Int {
                try await client.query("SELECT coalesce(max(change_id), 0) FROM cdp.segment_changes").scalar(Int.self)
            }
            func changes(after mark: Int, _ names: [UUID: String]) async throws -> [String] {
                try await client.query(
                    "SELECT segment, profile_id, change, reason FROM cdp.segment_changes WHERE change_id > \(mark)"
                ).map {
                    let (segment, id, change, reason) = try $0.decode((String, UUID, String, String).self)
                    return "\(segment) \(names[id] ?? id.uuidString) \(change) \(reason)"
                }.sorted()
            }
            let u1 = try await profile("user_id", "u1"), u2 = try await profile("user_id", "u2")
            #expect(try await memberships(u1) == [])
            #expect(try await memberships(u2) == ["rt_pro"])

            // A cart: u1 enters the real-time segment in the profile stage's batch; the scheduled one waits.
            var mark = try await lastChange()
            try await F.ingest([F.event(.track, user: "u1", event: "Added to Cart", at: F.day(2))], client)
            #expect(try await changes(after: mark, [u1: "u1"]) == ["rt_abandoned u1 entered profile"])
            #expect(try await memberships(u1) == ["rt_abandoned"])

            // An order after it: u1 leaves; a newer plan: u1 enters rt_pro.
            mark = try await lastChange()
            try await F.ingest([F.event(.track, user: "u1", event: "Order Completed", at: F.day(3))], client)
            #expect(try await changes(after: mark, [u1: "u1"]) == ["rt_abandoned u1 exited profile"])
            mark = try await lastChange()
            try await F.ingest([F.event(user: "u1", traits: #"{"plan": "pro"}"#, at: F.day(4))], client)
            #expect(try await changes(after: mark, [u1: "u1"]) == ["rt_pro u1 entered profile"])
            #expect(try await memberships(u1) == ["rt_pro"])

            // Two profiles, each a member, then an identify links them: one is merged into the other.
            try await F.ingest([F.event(user: "u9", traits: #"{"plan": "pro"}"#, at: F.day(1))], client)
            try await F.ingest(
                [
                    F.event(anonymous: "a9", traits: #"{"plan": "pro"}"#, at: F.day(2)),
                    F.event(.track, anonymous: "a9", event: "Added to Cart", at: F.day(3)),
                ], client)
            let user = try await profile("user_id", "u9"), visitor = try await profile("anonymous_id", "a9")
            #expect(user != visitor)
            #expect(try await memberships(user) == ["rt_pro"])
            #expect(try await memberships(visitor) == ["rt_pro", "rt_abandoned"])
            try await membership.refresh()
            #expect(try await memberships(visitor) == ["rt_pro", "rt_abandoned", "batch_abandoned"])

            mark = try await lastChange()
            try await F.ingest([F.event(user: "u9", anonymous: "a9", at: F.day(5))], client)
            let survivor = try await profile("user_id", "u9")
            #expect(try await profile("anonymous_id", "a9") == survivor)
            let gone = [user, visitor].filter { $0 != survivor }
            try #require(gone.count == 1)
            let mergedAway = gone[0]
            let names = [survivor: "survivor", mergedAway: "merged"]
            #expect(
                try await client.query("SELECT count(*) FROM cdp.profile_data WHERE profile_id = \(mergedAway)").scalar(Int.self)
                    == 0)
            // The survivor now holds the cart; the merged-away id leaves the real-time segments in the same batch.
            let realTime = try await changes(after: mark, names).filter { $0.hasPrefix("rt_") }
            // (The visitor held the cart: if the user's profile were the one merged away, the survivor was already in.)
            #expect(
                realTime
                    == (mergedAway == visitor
                        ? [
                            "rt_abandoned merged exited profile", "rt_abandoned survivor entered profile",
                            "rt_pro merged exited profile",
                        ]
                        : ["rt_pro merged exited profile"]))
            #expect(try await memberships(survivor).isSuperset(of: ["rt_pro", "rt_abandoned"]))
            #expect(try await memberships(mergedAway).isDisjoint(with: ["rt_pro", "rt_abandoned"]))
            // The scheduled segment follows at the refresh.
            try await membership.refresh()
            #expect(try await memberships(mergedAway) == [])
            #expect(try await memberships(survivor) == ["rt_pro", "rt_abandoned", "batch_abandoned"])
        }
    }
}
