import Foundation
import TributaryModel

/// Identifiers interned to integers with little memory per identifier: the values' bytes back to back in one array,
/// a start offset and a kind number each, and an open-addressing hash table of indices (no `String` per
/// identifier). The rebuild keeps a million identifiers in about 35 MB this way (22-byte values).
package struct IdentifierTable: Sendable {
    private(set) var kindNames: [String] = []
    private var kindBytes: [[UInt8]] = []
    private var bytes: [UInt8] = []
    private var starts: [UInt32] = [0]
    private var kinds: [UInt16] = []
    /// Indices into the entries, -1 for an empty slot; the capacity is a power of two, at most three quarters full
    /// (linear probing stays short at that load with this hash, and the slots are a third of the table's memory).
    private var slots = [Int32](repeating: -1, count: 1 << 12)

    package init() {}

    /// Identifiers interned so far.
    package var count: Int { kinds.count }

    /// The number of kind `name` (added if new).
    package mutating func kind(_ name: some Collection<UInt8>) -> UInt16 {
        if let known = kindBytes.firstIndex(where: { $0.elementsEqual(name) }) { return UInt16(known) }
        precondition(kindBytes.count < Int(UInt16.max), "too many identifier kinds")
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

    private func matches(_ entry: Int32, _ kind: UInt16, _ value: some Collection<UInt8>) -> Bool {
        let index = Int(entry)
        guard kinds[index] == kind else { return false }
        let start = Int(starts[index]), end = Int(starts[index + 1])
        return end - start == value.count && bytes[start..<end].elementsEqual(value)
    }

    /// The index of identifier (`kind`, `value`), interned if new.
    package mutating func intern(kind: UInt16, _ value: some Collection<UInt8>) -> Int32 {
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
        if kinds.count * 4 > slots.count * 3 { grow() }
        return entry
    }

    private mutating func grow() {
        slots = [Int32](repeating: -1, count: slots.count * 2)
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
        guard let number = kindBytes.firstIndex(where: { $0.elementsEqual(kind) }).map(UInt16.init) else { return nil }
        let mask = slots.count - 1
        var slot = Int(Self.hash(number, value) & UInt64(mask))
        while slots[slot] >= 0 {
            if matches(slots[slot], number, value) { return slots[slot] }
            slot = (slot + 1) & mask
        }
        return nil
    }

    package func kindNumber(_ entry: Int32) -> UInt16 { kinds[Int(entry)] }
    /// The value of `entry` as UTF-8 bytes, without making a `String`.
    package func valueBytes(_ entry: Int32) -> ArraySlice<UInt8> {
        bytes[Int(starts[Int(entry)])..<Int(starts[Int(entry) + 1])]
    }
    package func kindName(_ entry: Int32) -> String { kindNames[Int(kinds[Int(entry)])] }
    package func value(_ entry: Int32) -> String {
        String(decoding: bytes[Int(starts[Int(entry)])..<Int(starts[Int(entry) + 1])], as: UTF8.self)
    }
    package func identifier(_ entry: Int32) -> Identifier { Identifier(kind: kindName(entry), value: value(entry)) }
}
