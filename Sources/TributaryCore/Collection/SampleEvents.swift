import Foundation

/// Realistic sample traffic for the demo: visitors browse anonymously, some sign up (identify), view and buy
/// products; the same people also appear from the mobile app. Deterministic for a given seed.
public struct SampleEvents: Sendable {
    public var people: Int
    public var seed: UInt64

    public init(people: Int = 200, seed: UInt64 = 7) {
        self.people = people
        self.seed = seed
    }

    /// Segment batch bodies of at most `batchSize` calls each, as JSON objects.
    public func batches(batchSize: Int = 100, now: Date = Date()) -> [[String: Any]] {
        var random = seed
        func next(_ bound: Int) -> Int {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((random >> 33) % UInt64(bound))
        }
        let products = [("sku-100", "Trail Shoes", "shoes", 89.0), ("sku-200", "Rain Jacket", "outdoor", 129.0),
                        ("sku-300", "Coffee Grinder", "kitchen", 59.5), ("sku-400", "Wool Socks", "shoes", 14.0)]
        var calls: [[String: Any]] = []
        for person in 0..<people {
            let anonymous = "anon-\(seed)-\(person)"
            let user = "user-\(person)"
            let email = "Person.\(person)@Example.com "
            var time = now.addingTimeInterval(-Double(86_400 * (1 + next(60))))
            func stamp() -> String {
                time = time.addingTimeInterval(Double(30 + next(600)))
                return time.formatted(.iso8601)
            }
            let web: [String: Any] = ["library": ["name": "analytics.js", "version": "4.1.0"], "locale": "en-US"]
            calls.append(["type": "page", "anonymousId": anonymous, "name": "Home", "properties": ["path": "/"],
                          "messageId": "demo-\(seed)-\(person)-page", "timestamp": stamp(), "context": web])
            let product = products[next(products.count)]
            calls.append(["type": "track", "anonymousId": anonymous, "event": "Product Viewed",
                          "properties": ["product_id": product.0, "name": product.1, "category": product.2, "price": product.3],
                          "messageId": "demo-\(seed)-\(person)-viewed", "timestamp": stamp(), "context": web])
            guard next(3) > 0 else { continue }
            calls.append(["type": "identify", "anonymousId": anonymous, "userId": user,
                          "traits": ["email": email, "first_name": "Person \(person)", "plan": next(4) == 0 ? "pro" : "free"],
                          "messageId": "demo-\(seed)-\(person)-identify", "timestamp": stamp(), "context": web])
            if next(2) == 0 {
                calls.append(["type": "track", "userId": user, "event": "Order Completed",
                              "properties": ["order_id": "order-\(person)", "revenue": product.3, "currency": "USD",
                                             "products": [["product_id": product.0, "quantity": 1]]],
                              "messageId": "demo-\(seed)-\(person)-order", "timestamp": stamp(), "context": web])
            }
            if next(3) == 0 {
                calls.append(["type": "screen", "userId": user, "name": "Order History",
                              "messageId": "demo-\(seed)-\(person)-screen", "timestamp": stamp(),
                              "context": ["library": ["name": "analytics-ios", "version": "4.1.8"], "device": ["type": "ios"]]])
            }
        }
        return stride(from: 0, to: calls.count, by: batchSize).map { start in
            ["batch": Array(calls[start..<min(start + batchSize, calls.count)]), "sentAt": now.formatted(.iso8601)]
        }
    }
}
