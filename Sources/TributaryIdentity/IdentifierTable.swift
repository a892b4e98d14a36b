import Foundation
import TributaryModel

/// Identifiers interned to integers with little memory per identifier: the values' bytes back to back in one array,
/// a start offset and a kind number each, and an open-addressing hash table of indices (no `String` per
/// identifier). The rebuild keeps a million identifiers in about 35 MB this way (22-byte values). A value that is a
/// UUID in canonical lower-case text (what Segment's libraries make anonymous ids) is kept as its 16 bytes, not 36.
package struct IdentifierTable: Sendable {
    private(set) var kindNames: [String] = []
    private var kindBytes: [[UInt8]] = []
    private var bytes: [UInt8] = []
    private var starts: [UInt32] = [0]
    /// Per entry its kind number, with ``packed`` set when its bytes are a UUID's 16.
    private var kinds: [UInt16] = []
    private static let packed: UInt16 = 0x8000
    /// Indices into the entries, -1 for an empty slot; the capacity is a power of two, at most three quarters full
    /// (linear probing stays short at that load with this hash, and the slots are a third of the table's memory).
    private var slots = [Int32](repeating: -1, count: 1 << 12)

    package init() {}

    /// Identifiers interned so far.
    package var count: Int { kinds.count }

    /// The number of kind `name` (added if new).
    package mutating func kind(_ name: some Collection<UInt8>) -> UInt16 {
        if let known = kindBytes.firstIndex(where: { $0.elementsEqual(name) }) { return UInt16(known) }
        precondition(kindBytes.count < Int(Self.packed), "too many identifier kinds")
        kindBytes.append(Array(name))
        kindNames.append(String(decoding: name, as: UTF8.self))
        return UInt16(kindBytes.count - 1)
    }

    private static func hash(_ kind: UInt16, _ value: some Collection<UInt8>) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(kind)
        for byte in value {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return hash ^ (hash >> 29)
    }

    /// The 16 bytes of a UUID written in canonical lower-case text (8-4-4-4-12 hex digits), else nil. Their order is
    /// the text's: hex digits sort as their values, and the dashes stand in the same places.
    private static func pack(_ value: some Collection<UInt8>) -> [UInt8]? {
        guard value.count == 36 else { return nil }
        var out = [UInt8](repeating: 0, count: 16)
        var position = 0, nibbles = 0
        for byte in value {
            defer { position += 1 }
            if position == 8 || position == 13 || position == 18 || position == 23 {
                guard byte == UInt8(ascii: "-") else { return nil }
                continue
            }
            let nibble: UInt8
            switch byte {
            case 0x30...0x39: nibble = byte - 0x30
            case 0x61...0x66: nibble = byte - 0x61 + 10
            default: return nil
            }
            out[nibbles / 2] |= nibbles % 2 == 0 ? nibble << 4 : nibble
            nibbles += 1
        }
        return out
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// The text of a packed UUID.
    private static func unpack(_ raw: ArraySlice<UInt8>) -> [UInt8] {
        let digits = hexDigits
        var out: [UInt8] = []
        out.reserveCapacity(36)
        for (offset, byte) in raw.enumerated() {
            if offset == 4 || offset == 6 || offset == 8 || offset == 10 { out.append(UInt8(ascii: "-")) }
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return out
    }

    /// The kind and bytes an identifier is stored and hashed as.
    private static func key<Value: Collection<UInt8>>(_ kind: UInt16, _ value: Value) -> (UInt16, [UInt8]?) {
        if let raw = pack(value) { return (kind | packed, raw) }
        return (kind, nil)
    }

    private func matches(_ entry: Int32, _ kind: UInt16, _ value: some Collection<UInt8>) -> Bool {
        let index = Int(entry)
        guard kinds[index] == kind else { return false }
        let start = Int(starts[index]), end = Int(starts[index + 1])
        return end - start == value.count && bytes[start..<end].elementsEqual(value)
    }

    /// The index of identifier (`kind`, `value`), interned if new.
    package mutating func intern(kind: UInt16, _ value: some Collection<UInt8>) -> Int32 {
        let (stored, raw) = Self.key(kind, value)
        return raw.map { insert(stored, $0) } ?? insert(stored, value)
    }

    private mutating func insert(_ kind: UInt16, _ value: some Collection<UInt8>) -> Int32 {
        precondition(!slots.isEmpty, "the identifier index is released (restoreIndex() first)")
        let mask = slots.count - 1
        var slot = Int(Self.hash(kind, value) & UInt64(mask))
        while slots[slot] >= 0 {
            if matches(slots[slot], kind, value) { return slots[slot] }
            slot = (slot + 1) & mask
        }
        let entry = Int32(kinds.count)
        precondition(bytes.count + value.count < Int(UInt32.max), "identifier values exceed 4 GB")
        bytes.append(contentsOf: value)
        starts.append(UInt32(bytes.count))
        kinds.append(kind)
        slots[slot] = entry
        if Self.overfull(kinds.count, slots: slots.count) { grow() }
        return entry
    }

    /// Whether `entries` fill more than three quarters of `slots`.
    private static func overfull(_ entries: Int, slots: Int) -> Bool { entries * 4 > slots * 3 }

    private mutating func grow() { rehash(slots: slots.count * 2) }

    /// Frees the hash index (a third of the table's memory): ``find(kind:value:)`` and ``intern(kind:_:)`` must not
    /// be called until ``restoreIndex()``.
    package mutating func releaseIndex() { slots = [] }

    /// Rebuilds the hash index ``releaseIndex()`` freed.
    package mutating func restoreIndex() {
        guard slots.isEmpty else { return }
        var capacity = 1 << 12
        while Self.overfull(kinds.count, slots: capacity) { capacity *= 2 }
        rehash(slots: capacity)
    }

    private mutating func rehash(slots capacity: Int) {
        slots = [Int32](repeating: -1, count: capacity)
        let mask = slots.count - 1
        for entry in 0..<kinds.count {
            let start = Int(starts[entry]), end = Int(starts[entry + 1])
            var slot = Int(Self.hash(kinds[entry], bytes[start..<end]) & UInt64(mask))
            while slots[slot] >= 0 { slot = (slot + 1) & mask }
            slots[slot] = Int32(entry)
        }
    }

    /// The index of identifier (`kind`, `value`) if it was interned.
    package func find(kind: String, value: String) -> Int32? {
        find(kind: Array(kind.utf8), value: Array(value.utf8))
    }

    /// ``find(kind:value:)`` for UTF-8 bytes.
    package func find(kind: some Collection<UInt8>, value: some Collection<UInt8>) -> Int32? {
        precondition(!slots.isEmpty, "the identifier index is released (restoreIndex() first)")
        guard let number = kindBytes.firstIndex(where: { $0.elementsEqual(kind) }).map(UInt16.init) else { return nil }
        let (stored, raw) = Self.key(number, value)
        return raw.map { lookup(stored, $0) } ?? lookup(stored, value)
    }

    private func lookup(_ number: UInt16, _ value: some Collection<UInt8>) -> Int32? {
        let mask = slots.count - 1
        var slot = Int(Self.hash(number, value) & UInt64(mask))
        while slots[slot] >= 0 {
            if matches(slots[slot], number, value) { return slots[slot] }
            slot = (slot + 1) & mask
        }
        return nil
    }

    package func kindNumber(_ entry: Int32) -> UInt16 { kinds[Int(entry)] & ~Self.packed }
    private func stored(_ entry: Int32) -> ArraySlice<UInt8> { bytes[Int(starts[Int(entry)])..<Int(starts[Int(entry) + 1])] }
    /// The value of `entry` as UTF-8 bytes, without making a `String` (nor an array unless it is a packed UUID).
    package func valueBytes(_ entry: Int32) -> ArraySlice<UInt8> {
        kinds[Int(entry)] & Self.packed == 0 ? stored(entry) : Self.unpack(stored(entry))[...]
    }
    /// Whether the value of `a` precedes the value of `b` in byte order.
    package func valuePrecedes(_ a: Int32, _ b: Int32) -> Bool {
        if (kinds[Int(a)] ^ kinds[Int(b)]) & Self.packed == 0 { return stored(a).lexicographicallyPrecedes(stored(b)) }
        return valueBytes(a).lexicographicallyPrecedes(valueBytes(b))
    }
    package func kindName(_ entry: Int32) -> String { kindNames[Int(kindNumber(entry))] }
    package func value(_ entry: Int32) -> String { String(decoding: valueBytes(entry), as: UTF8.self) }
    package func identifier(_ entry: Int32) -> Identifier { Identifier(kind: kindName(entry), value: value(entry)) }
}
