import Foundation
import TributaryModel

/// Realistic sample traffic for the demo: visitors browse anonymously, some sign up (identify), view and buy
/// products; the same people also appear from the mobile app, the email platform (opens under its own id, with the
/// address), the CRM (identify with phone, CRM external id and consent preferences) and shop tills (loyalty purchases
/// under a per-transaction id with the phone). Deterministic for a given seed.
public struct SampleEvents: Sendable {
    public var people: Int
    public var seed: UInt64

    public init(people: Int = 200, seed: UInt64 = 7) {
        self.people = people
        self.seed = seed
    }

    /// Segment batch bodies of at most `batchSize` calls each, as JSON objects.
    public func batches(batchSize: Int = 100, now: Date = Date()) -> [JSONValue] {
        var random = seed
        func next(_ bound: Int) -> Int {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((random >> 33) % UInt64(bound))
        }
        let products = [
            ("sku-100", "Trail Shoes", "shoes", 89.0), ("sku-200", "Rain Jacket", "outdoor", 129.0),
            ("sku-300", "Coffee Grinder", "kitchen", 59.5), ("sku-400", "Wool Socks", "shoes", 14.0),
        ]
        var calls: [JSONValue] = []
        for person in 0..<people {
            let anonymous = "anon-\(seed)-\(person)"
            let user = "user-\(person)"
            let email = "Person.\(person)@Example.com "
            var time = now.addingTimeInterval(-Double(86_400 * (1 + next(60))))
            func stamp() -> JSONValue {
                time = time.addingTimeInterval(Double(30 + next(600)))
                return .string(time.formatted(.iso8601))
            }
            // The email platform first (a newsletter opened before signing up on the site): its own id and the address it
            // mailed. The sign-up later links the two profiles: a merge.
            if next(2) == 0 {
                let esp: JSONValue = [
                    "library": ["name": "esp-webhooks", "version": "1.0"],
                    "traits": ["email": .string(email.lowercased().trimmingCharacters(in: .whitespaces))],
                ]
                calls.append([
                    "type": "track", "anonymousId": "esp-\(seed)-\(person)", "event": "Email Opened",
                    "properties": ["campaign": "autumn-sale"], "messageId": "demo-\(seed)-\(person)-open",
                    "timestamp": stamp(), "context": esp,
                ])
            }
            let web: JSONValue = ["library": ["name": "analytics.js", "version": "4.1.0"], "locale": "en-US"]
            calls.append([
                "type": "page", "anonymousId": .string(anonymous), "name": "Home", "properties": ["path": "/"],
                "messageId": "demo-\(seed)-\(person)-page", "timestamp": stamp(), "context": web,
            ])
            let product = products[next(products.count)]
            calls.append([
                "type": "track", "anonymousId": .string(anonymous), "event": "Product Viewed",
                "properties": [
                    "product_id": .string(product.0), "name": .string(product.1), "category": .string(product.2),
                    "price": JSONValue(product.3),
                ],
                "messageId": "demo-\(seed)-\(person)-viewed", "timestamp": stamp(), "context": web,
            ])
            guard next(3) > 0 else { continue }
            calls.append([
                "type": "identify", "anonymousId": .string(anonymous), "userId": .string(user),
                "traits": ["email": .string(email), "first_name": "Person \(person)", "plan": next(4) == 0 ? "pro" : "free"],
                "messageId": "demo-\(seed)-\(person)-identify", "timestamp": stamp(), "context": web,
            ])
            if next(2) == 0 {
                calls.append([
                    "type": "track", "userId": .string(user), "event": "Order Completed",
                    "properties": [
                        "order_id": "order-\(person)", "revenue": JSONValue(product.3), "currency": "USD",
                        "products": [["product_id": .string(product.0), "quantity": 1]],
                    ],
                    "messageId": "demo-\(seed)-\(person)-order", "timestamp": stamp(), "context": web,
                ])
            }
            // The CRM: the customer record with a phone and the CRM id as an external id.
            let phone = "+1 (555) 01\(String(format: "%02d", person % 100))-\(String(format: "%04d", person))"
            if next(2) == 0 {
                calls.append([
                    "type": "identify", "userId": .string(user),
                    "traits": [
                        "email": .string(email), "phone": .string(phone), "lifecycle_stage": next(3) == 0 ? "customer" : "lead",
                    ],
                    "messageId": "demo-\(seed)-\(person)-crm", "timestamp": stamp(),
                    "context": [
                        "library": ["name": "crm-export", "version": "2.3"],
                        "externalIds": [["id": "crm-\(person)", "type": "crm_id", "collection": "users"]],
                        // Preferences recorded in the CRM (Segment's consent format).
                        "consent": ["categoryPreferences": ["Marketing": .bool(next(4) > 0), "Analytics": true]],
                    ],
                ])
                // The shop till: a loyalty purchase under a per-transaction id, with the member's phone.
                if next(3) == 0 {
                    calls.append([
                        "type": "track", "anonymousId": "pos-\(seed)-\(person)", "event": "Order Completed",
                        "properties": [
                            "order_id": "pos-order-\(person)", "revenue": 24.5, "currency": "USD", "store": "Store 12",
                            "products": [["product_id": "sku-400", "quantity": 1]],
                        ],
                        "messageId": "demo-\(seed)-\(person)-pos", "timestamp": stamp(),
                        "context": ["library": ["name": "pos-sync", "version": "0.9"], "traits": ["phone": .string(phone)]],
                    ])
                }
            }
            if next(3) == 0 {
                calls.append([
                    "type": "screen", "userId": .string(user), "name": "Order History",
                    "messageId": "demo-\(seed)-\(person)-screen", "timestamp": stamp(),
                    "context": ["library": ["name": "analytics-ios", "version": "4.1.8"], "device": ["type": "ios"]],
                ])
            }
        }
        return stride(from: 0, to: calls.count, by: batchSize).map { start in
            [
                "batch": .array(Array(calls[start..<min(start + batchSize, calls.count)])),
                "sentAt": .string(now.formatted(.iso8601)),
            ]
        }
    }
}
