import Foundation

/// The type of a trait or event property, as the typed catalog records it.
public enum ValueType: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    case string, integer, double, boolean, timestamp, object, array

    /// The name used in error messages and generated Swift (`String`, `Int`, `Double`, ...).
    public var swiftName: String {
        switch self {
        case .string: "String"
        case .integer: "Int"
        case .double: "Double"
        case .boolean: "Bool"
        case .timestamp: "Date"
        case .object: "JSONObject"
        case .array: "JSONArray"
        }
    }

    /// The PostgreSQL type of a typed column holding values of this type.
    public var sqlType: String {
        switch self {
        case .string: "text"
        case .integer: "bigint"
        case .double: "double precision"
        case .boolean: "boolean"
        case .timestamp: "timestamptz"
        case .object, .array: "jsonb"
        }
    }

    /// Whether values of this type can be compared with `<`, `>`, summed or averaged.
    public var isNumeric: Bool { self == .integer || self == .double }

    public var description: String { swiftName }
}

/// A Swift type that traits and event properties can have.
public protocol CatalogValue: Sendable {
    static var valueType: ValueType { get }
}

/// A numeric trait or property type: the only ones that can be summed, averaged or compared with `<` and `>`.
public protocol NumericCatalogValue: CatalogValue {}

extension String: CatalogValue { public static var valueType: ValueType { .string } }
extension Int: NumericCatalogValue { public static var valueType: ValueType { .integer } }
extension Double: NumericCatalogValue { public static var valueType: ValueType { .double } }
extension Bool: CatalogValue { public static var valueType: ValueType { .boolean } }
extension Date: CatalogValue { public static var valueType: ValueType { .timestamp } }

/// Marker type for JSON object values in the catalog.
public enum JSONObject: CatalogValue { public static var valueType: ValueType { .object } }
/// Marker type for JSON array values in the catalog.
public enum JSONArray: CatalogValue { public static var valueType: ValueType { .array } }

/// A profile trait of a known type, for example `Trait<Double>("lifetime_value")`. The typed catalog generates one
/// constant per trait (`tributary catalog infer --swift`).
public struct Trait<Value: CatalogValue>: Sendable, Hashable {
    /// The trait's key in `traits` (as sent in identify calls).
    public let key: String
    public init(_ key: String) { self.key = key }
    public var valueType: ValueType { Value.valueType }
}

/// An event property of a known type, for example `Property<Double>("revenue", event: "Order Completed")`.
public struct Property<Value: CatalogValue>: Sendable, Hashable {
    /// The property's key in `properties`.
    public let key: String
    /// The event the catalog found it on (nil: any event).
    public let event: String?
    public init(_ key: String, event: String? = nil) {
        self.key = key
        self.event = event
    }
    public var valueType: ValueType { Value.valueType }
}
