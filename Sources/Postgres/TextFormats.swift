import Foundation

/// PostgreSQL's text forms of `timestamptz`, `timestamp` and `date` (and so ISO-8601), converted without `DateFormatter`.
public enum PostgresTime {
    private static let microsPerDay: Int64 = 86_400_000_000

    /// `2026-11-25T10:11:12.123456Z`: UTC, microsecond precision (PostgreSQL stores microseconds).
    public static func format(_ date: Date) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(28)
        append(date, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends ``format(_:)``'s text to a byte buffer.
    public static func append(_ date: Date, to out: inout [UInt8]) {
        append(micros: Int64((date.timeIntervalSince1970 * 1_000_000).rounded()), to: &out)
    }

    /// Appends the moment `micros` microseconds after 1970-01-01 UTC as ``format(_:)`` writes it (exact: no
    /// floating point on the way).
    public static func append(micros: Int64, to out: inout [UInt8]) {
        var days = micros / microsPerDay
        var rest = micros % microsPerDay
        if rest < 0 {
            rest += microsPerDay
            days -= 1
        }
        let (year, month, day) = civil(fromDays: days)
        let seconds = rest / 1_000_000
        func digits(_ value: Int64, _ width: Int) {
            var text = Array(String(value).utf8)
            if text.count < width { text.insert(contentsOf: repeatElement(UInt8(ascii: "0"), count: width - text.count), at: 0) }
            out.append(contentsOf: text)
        }
        func two(_ value: Int64) {
            out.append(UInt8(truncatingIfNeeded: 48 + value / 10))
            out.append(UInt8(truncatingIfNeeded: 48 + value % 10))
        }
        if (0...9999).contains(year) {
            two(year / 100)
            two(year % 100)
        } else {
            digits(year, 4)
        }
        out.append(UInt8(ascii: "-"))
        two(month)
        out.append(UInt8(ascii: "-"))
        two(day)
        out.append(UInt8(ascii: "T"))
        two(seconds / 3600)
        out.append(UInt8(ascii: ":"))
        two(seconds / 60 % 60)
        out.append(UInt8(ascii: ":"))
        two(seconds % 60)
        out.append(UInt8(ascii: "."))
        var fraction = rest % 1_000_000
        var fractionDigits = [UInt8](repeating: 48, count: 6)
        for i in stride(from: 5, through: 0, by: -1) {
            fractionDigits[i] = UInt8(truncatingIfNeeded: 48 + fraction % 10)
            fraction /= 10
        }
        out.append(contentsOf: fractionDigits)
        out.append(UInt8(ascii: "Z"))
    }

    /// Parses `2026-11-25 10:11:12.123456+05:30`, `2026-11-25 10:11:12` (read as UTC), `2026-11-25`,
    /// `infinity` and `-infinity`.
    public static func parse(_ text: String) throws -> Date {
        if text == "infinity" { return .distantFuture }
        if text == "-infinity" { return .distantPast }
        var scanner = ByteScanner(text)
        guard let year = scanner.number(), scanner.take("-"), let month = scanner.number(digits: 2), scanner.take("-"),
            let day = scanner.number(digits: 2), (1...12).contains(month), (1...31).contains(day)
        else { throw DecodingFailure("'\(text.prefix(40))' is not a date or timestamp") }
        var micros: Int64 = 0
        var offsetSeconds: Int64 = 0
        if scanner.take(" ") || scanner.take("T") {
            guard let hour = scanner.number(digits: 2), scanner.take(":"), let minute = scanner.number(digits: 2),
                scanner.take(":"), let second = scanner.number(digits: 2)
            else { throw DecodingFailure("'\(text.prefix(40))' is not a timestamp") }
            micros = ((hour * 60 + minute) * 60 + second) * 1_000_000
            if scanner.take(".") {
                var scale: Int64 = 100_000
                while let digit = scanner.digit() {
                    micros += digit * scale
                    scale /= 10
                }
            }
            if scanner.take("Z") {
                offsetSeconds = 0
            } else if let sign = scanner.sign() {
                guard let hours = scanner.number(digits: 2) else {
                    throw DecodingFailure("'\(text.prefix(40))' has an invalid time zone offset")
                }
                var offset = hours * 3600
                if scanner.take(":"), let minutes = scanner.number(digits: 2) { offset += minutes * 60 }
                if scanner.take(":"), let seconds = scanner.number(digits: 2) { offset += seconds }
                offsetSeconds = sign * offset
            }
        }
        if scanner.take(" BC") || !scanner.atEnd {
            throw DecodingFailure("'\(text.prefix(40))' is not a timestamp this layer can represent")
        }
        let days = daysFromCivil(year: year, month: month, day: day)
        let total = days * microsPerDay + micros - offsetSeconds * 1_000_000
        return Date(timeIntervalSince1970: Double(total) / 1_000_000)
    }

    /// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

/// A cursor over the UTF-8 bytes of a short string.
struct ByteScanner {
    private let bytes: [UInt8]
    private var index = 0

    init(_ text: String) { bytes = Array(text.utf8) }

    var atEnd: Bool { index == bytes.count }

    mutating func take(_ literal: String) -> Bool {
        let expected = Array(literal.utf8)
        guard bytes.count - index >= expected.count, Array(bytes[index..<index + expected.count]) == expected else {
            return false
        }
        index += expected.count
        return true
    }

    mutating func digit() -> Int64? {
        guard index < bytes.count, (48...57).contains(bytes[index]) else { return nil }
        defer { index += 1 }
        return Int64(bytes[index] - 48)
    }

    /// Reads exactly `digits` digits, or at least one when `digits` is nil.
    mutating func number(digits: Int? = nil) -> Int64? {
        let start = index
        var value: Int64 = 0
        while let digit = digit() {
            value = value * 10 + digit
            if let digits, index - start == digits { break }
        }
        if index == start || (digits != nil && index - start != digits) {
            index = start
            return nil
        }
        return value
    }

    mutating func sign() -> Int64? {
        if take("+") { return 1 }
        if take("-") { return -1 }
        return nil
    }
}

/// `bytea` in PostgreSQL's hex output format (`\x0a0b…`), the default since 9.0.
enum ByteaText {
    static func decode(_ text: String) throws -> [UInt8] {
        let utf8 = Array(text.utf8)
        guard utf8.count >= 2, utf8[0] == UInt8(ascii: "\\"), utf8[1] == UInt8(ascii: "x"), utf8.count % 2 == 0 else {
            throw DecodingFailure("bytea is not in hex format (set bytea_output = 'hex')")
        }
        func nibble(_ c: UInt8) throws -> UInt8 {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: throw DecodingFailure("bytea holds an invalid hex digit")
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2 - 1)
        var i = 2
        while i < utf8.count {
            out.append(try nibble(utf8[i]) << 4 | nibble(utf8[i + 1]))
            i += 2
        }
        return out
    }
}

/// COPY's text format: a value with backslash, tab, newline and carriage return escaped.
package enum CopyText {
    /// Appends `text` escaped for COPY's text format.
    @inlinable
    package static func appendEscaped(_ text: String, to out: inout [UInt8]) {
        appendEscaped(bytes: text.utf8, to: &out)
    }

    /// Appends UTF-8 `bytes` escaped for COPY's text format.
    @inlinable
    package static func appendEscaped(bytes: some Sequence<UInt8>, to out: inout [UInt8]) {
        for byte in bytes {
            switch byte {
            case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            default: out.append(byte)
            }
        }
    }

    /// `text` escaped for COPY's text format.
    package static func escaped(_ text: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        appendEscaped(text, to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}

/// One-dimensional array literals: `{a,"b c",NULL,"say \"hi\""}`.
package enum ArrayLiteral {
    static func encode(_ elements: [String?]) throws -> String {
        var out = "{"
        for (i, element) in elements.enumerated() {
            if i > 0 { out += "," }
            out += element.map(quoted) ?? "NULL"
        }
        return out + "}"
    }

    /// One element, quoted: `"say \"hi\""`.
    package static func quoted(_ element: String) -> String {
        var out = "\""
        for character in element.unicodeScalars {
            if character == "\"" || character == "\\" { out += "\\" }
            out.unicodeScalars.append(character)
        }
        return out + "\""
    }

    static func parse(_ text: String) throws -> [String?] {
        var bytes = Array(text.utf8)[...]
        // Arrays with non-default bounds print as `[0:2]={…}`.
        if bytes.first == UInt8(ascii: "["), let equals = bytes.firstIndex(of: UInt8(ascii: "=")) {
            bytes = bytes[(equals + 1)...]
        }
        guard bytes.first == UInt8(ascii: "{"), bytes.last == UInt8(ascii: "}") else {
            throw DecodingFailure("'\(text.prefix(40))' is not an array")
        }
        bytes = bytes.dropFirst().dropLast()
        if bytes.isEmpty { return [] }
        if bytes.first == UInt8(ascii: "{") {
            throw DecodingFailure("multi-dimensional arrays are not supported")
        }
        var result: [String?] = []
        var current: [UInt8] = []
        var quoted = false
        var wasQuoted = false
        var escaped = false
        for byte in bytes {
            if escaped {
                current.append(byte)
                escaped = false
            } else if byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                quoted.toggle()
                wasQuoted = true
            } else if byte == UInt8(ascii: ","), !quoted {
                result.append(element(current, wasQuoted))
                current = []
                wasQuoted = false
            } else {
                current.append(byte)
            }
        }
        result.append(element(current, wasQuoted))
        return result
    }

    private static func element(_ bytes: [UInt8], _ wasQuoted: Bool) -> String? {
        let text = String(decoding: bytes, as: UTF8.self)
        return !wasQuoted && text == "NULL" ? nil : text
    }
}
