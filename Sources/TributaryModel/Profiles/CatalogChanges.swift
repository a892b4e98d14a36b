/// One difference between two catalogs: a trait, event or property added or removed, or a trait or property whose
/// specification changed (`~ traits.age: type integer → double`).
public struct CatalogChange: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable { case added = "+", removed = "-", changed = "~" }
    public var kind: Kind
    /// Where, as in error messages: `traits.email`, `events["Order Completed"].properties.revenue`.
    public var path: String
    /// What: the type of what was added or removed, or the fields that changed.
    public var detail: String

    public var description: String { "\(kind.rawValue) \(path): \(detail)" }
}

extension Catalog {
    /// What changes from `old` (nil: no catalog) to this catalog, in key order; empty if they are the same. Both are
    /// compared in ``canonical`` form, so a column written out equals the same column derived from the key.
    public func changes(from old: Catalog?) -> [CatalogChange] {
        let old = old?.canonical ?? Catalog(), new = canonical
        var changes = Self.changes(from: old.traits, to: new.traits, at: "traits")
        for name in Set(old.events.keys).union(new.events.keys).sorted() {
            let path = Self.path("events", name)
            switch (old.events[name], new.events[name]) {
            case (nil, let added?):
                changes.append(CatalogChange(kind: .added, path: path, detail: "\(added.properties.count) properties"))
            case (let removed?, nil):
                changes.append(CatalogChange(kind: .removed, path: path, detail: "\(removed.properties.count) properties"))
            case (let before?, let after?):
                changes += Self.changes(from: before.properties, to: after.properties, at: Self.path(path, "properties"))
            case (nil, nil): break
            }
        }
        return changes
    }

    private static func changes(from old: [String: FieldSpec], to new: [String: FieldSpec], at parent: String) -> [CatalogChange]
    {
        Set(old.keys).union(new.keys).sorted().compactMap { key in
            let path = Self.path(parent, key)
            switch (old[key], new[key]) {
            case (nil, let added?): return CatalogChange(kind: .added, path: path, detail: added.type.rawValue)
            case (let removed?, nil): return CatalogChange(kind: .removed, path: path, detail: removed.type.rawValue)
            case (let before?, let after?) where before != after:
                func change(_ name: String, _ from: String?, _ to: String?) -> String? {
                    from == to ? nil : "\(name) \(from ?? "none") → \(to ?? "none")"
                }
                let fields = [
                    change("type", before.type.rawValue, after.type.rawValue),
                    change("column", before.column, after.column),
                    before.description == after.description ? nil : "description changed",
                    change("pii", before.pii.map(String.init), after.pii.map(String.init)),
                ]
                return CatalogChange(kind: .changed, path: path, detail: fields.compactMap { $0 }.joined(separator: ", "))
            default: return nil
            }
        }
    }
}
