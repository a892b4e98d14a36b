import Foundation
import Postgres

extension SegmentDefinitions {
    /// Checks names, operators against values, references between segments (known, no cycles), fields and, when
    /// given, types against the catalog and computed trait names against their definitions. Errors give the path.
    public func validate(catalog: Catalog?, computed: ComputedTraitDefinitions?) throws {
        var positions: [String: Int] = [:]
        for (index, segment) in segments.enumerated() {
            let path = "segments[\(index)]"
            try Self.checkName(segment.name, at: "\(path).name")
            if let earlier = positions[segment.name] {
                throw ProfileError("\(path).name: '\(segment.name)' is already the name of segments[\(earlier)]")
            }
            positions[segment.name] = index
        }
        let context = ValidationContext(catalog: catalog, computed: computed, segments: Set(positions.keys))
        for (index, segment) in segments.enumerated() {
            let path = "segments[\(index)]"
            for (position, condition) in segment.conditions.enumerated() {
                try context.validate(condition, at: "\(path).conditions[\(position)]")
            }
            try context.validate(fields: segment.fields, at: "\(path).fields")
        }
        // References form no cycle: walk each segment's references depth-first.
        for (index, segment) in segments.enumerated() {
            var trail = [segment.name]
            func walk(_ name: String) throws {
                for next in self[name]?.references ?? [] {
                    if next == segment.name {
                        throw ProfileError(
                            "segments[\(index)].conditions: '\(segment.name)' refers back to itself through \((trail + [next]).joined(separator: " → "))"
                        )
                    }
                    if trail.contains(next) { continue }
                    trail.append(next)
                    try walk(next)
                    trail.removeLast()
                }
            }
            try walk(segment.name)
        }
    }

    /// A segment name: not empty, no NUL, at most 63 bytes (it is a view name).
    static func checkName(_ name: String, at path: String) throws {
        if name.isEmpty || name.utf8.contains(0) { throw ProfileError("\(path): must not be empty or contain NUL") }
        if !SQLNames.fits(name) {
            throw ProfileError(
                "\(path): '\(name)' is \(name.utf8.count) bytes long; a segment name is a view name, at most \(SQLNames.maxBytes) bytes"
            )
        }
    }
}

private struct ValidationContext {
    let catalog: Catalog?
    let computed: ComputedTraitDefinitions?
    let segments: Set<String>

    /// The type of a computed trait; `.object` stands for "known, type unknown". Nil: not defined (or no definitions).
    func computedType(_ name: String) -> ValueType?? {
        guard let computed else { return .some(nil) }
        if let trait = computed.computedTraits.first(where: { $0.name == name }) {
            return .some(trait.valueType(catalog: catalog))
        }
        if computed.rfm.enabled, RFMSettings.traitNames.contains(name) { return .some(name == "rfm_score" ? .string : .integer) }
        if let prediction = computed.prediction(name) { return .some(prediction.valueType) }
        return nil
    }

    var computedNames: String {
        let names =
            (computed?.computedTraits.map(\.name) ?? []) + ((computed?.rfm.enabled ?? false) ? RFMSettings.traitNames : [])
            + (computed?.predictions.map(\.name) ?? [])
        return names.isEmpty ? "none are defined" : "defined: \(names.joined(separator: ", "))"
    }

    /// A comparison of a predictive trait: a number (=, !=, >, >=, <, <=), or a product list (`contains` a product);
    /// either `exists` or `not_exists` (scored or not).
    func validate(
        _ prediction: PredictiveTrait, _ op: PropertyCondition.Operator, _ value: ConditionValue?, at path: String
    ) throws {
        switch (op, value) {
        case (.exists, nil), (.notExists, nil): return
        case (.exists, _), (.notExists, _): throw ProfileError("\(path).value: '\(op.rawValue)' takes no value")
        case (.contains, .string(let product)?) where prediction.predict == .recommendedProducts:
            if product.utf8.contains(0) { throw ProfileError("\(path).value: must not contain NUL") }
        case (_, _) where prediction.predict == .recommendedProducts:
            throw ProfileError(
                "\(path).op: '\(prediction.name)' is a list of products: use contains (with a product id), exists or not_exists")
        case (.equal, .number(let number)?), (.notEqual, .number(let number)?), (.greater, .number(let number)?),
            (.greaterOrEqual, .number(let number)?), (.less, .number(let number)?), (.lessOrEqual, .number(let number)?):
            if !number.isFinite { throw ProfileError("\(path).value: must be a finite number") }
        case (.equal, _), (.notEqual, _), (.greater, _), (.greaterOrEqual, _), (.less, _), (.lessOrEqual, _):
            throw ProfileError("\(path).value: prediction '\(prediction.name)' is compared with a number")
        default:
            throw ProfileError(
                "\(path).op: a prediction is compared with =, !=, >, >=, <, <=, exists or not_exists, not '\(op.rawValue)'")
        }
    }

    func validate(_ condition: SegmentCondition, at path: String) throws {
        switch condition.node {
        case .trait(let key, let op, let value):
            // A predictive trait is not among the identify traits: compared as a trait it would silently match nothing.
            if computed?.prediction(key) != nil, catalog?.traitType(key) == nil {
                throw ProfileError(
                    "\(path).trait: '\(key)' is a predictive trait, not a trait of identify calls; compare it as "
                        + "{\"computed\": \"\(key)\", \"op\": …} (Computed<Double>(\"\(key)\") or Prediction(\"\(key)\") in Swift)"
                )
            }
            try ComputedTraitDefinitions.validate(
                key, op, value, type: catalog?.traitType(key), timestamps: true, subject: "trait", keyPath: "\(path).trait",
                at: path)
        case .computed(let name, let op, let value):
            if let prediction = computed?.prediction(name) {
                try validate(prediction, op, value, at: path)
                return
            }
            guard let type = computedType(name) else {
                throw ProfileError("\(path).computed: unknown computed trait '\(name)' (\(computedNames))")
            }
            try ComputedTraitDefinitions.validate(
                name, op, value, type: type, timestamps: true, subject: "computed trait", keyPath: "\(path).computed", at: path)
        case .prediction(let name, let percentile, let op, let value):
            guard SQLNames.isPlain(name, leadingUnderscore: false) else {
                throw ProfileError(
                    "\(path).prediction: '\(name)' is not a prediction name (lower case letters, digits and _; "
                        + "\(Prediction.customerBaseScores.joined(separator: ", ")) or a propensity's name)")
            }
            switch PredictionSource.named(name, in: computed) {
            case .recommendations:
                throw ProfileError(
                    "\(path).prediction: '\(name)' is a list of products, not a number; use {\"computed\": \"\(name)\", \"op\": \"contains\", \"value\": PRODUCT}"
                )
            case .customerBase where percentile:
                throw ProfileError("\(path).percentile: '\(name)' has no percentile (only propensities do)")
            default: break
            }
            switch op {
            case .equal, .notEqual, .greater, .greaterOrEqual, .less, .lessOrEqual: break
            default:
                throw ProfileError("\(path).op: a prediction is compared with =, !=, >, >=, < or <=, not '\(op.rawValue)'")
            }
            if !value.isFinite { throw ProfileError("\(path).value: must be a finite number") }
        case .allOf(let all), .anyOf(let all):
            let key = if case .allOf = condition.node { "allOf" } else { "anyOf" }
            if all.isEmpty { throw ProfileError("\(path).\(key): must list at least one condition") }
            for (index, inner) in all.enumerated() { try validate(inner, at: "\(path).\(key)[\(index)]") }
        case .not(let inner):
            try validate(inner, at: "\(path).not")
        case .segment(let name):
            if !segments.contains(name) {
                throw ProfileError(
                    "\(path).segment: unknown segment '\(name)' (a segment can only refer to segments in the same file)")
            }
        case .event(let condition):
            try validate(condition.event, at: "\(path).event")
            switch condition.op {
            case .equal, .notEqual, .greater, .greaterOrEqual, .less, .lessOrEqual: break
            default:
                throw ProfileError(
                    "\(path).op: an event aggregate is compared with =, !=, >, >=, < or <=, not '\(condition.op.rawValue)'")
            }
            if !condition.value.isFinite { throw ProfileError("\(path).value: must be a finite number") }
            if condition.aggregate == .count {
                if let property = condition.property {
                    throw ProfileError("\(path).property: aggregate 'count' takes no property (got '\(property)')")
                }
            } else {
                guard let property = condition.property, !property.isEmpty, !property.utf8.contains(0) else {
                    throw ProfileError(
                        "\(path).property: required for aggregate '\(condition.aggregate.rawValue)' (not empty, no NUL)")
                }
                if let type = catalog?.propertyType(event: condition.event.name, key: property), !type.isNumeric {
                    throw ProfileError(
                        "\(path).property: aggregate '\(condition.aggregate.rawValue)' needs a number; property '\(property)' is \(type)"
                    )
                }
            }
        case .funnel(let funnel):
            if funnel.steps.count < 2 { throw ProfileError("\(path).funnel.steps: a funnel needs at least two steps") }
            try validate(funnel.within, at: "\(path).funnel.within")
            for (index, step) in funnel.steps.enumerated() { try validate(step, at: "\(path).funnel.steps[\(index)]") }
        case .notSince(let event, let since):
            try validate(event, at: "\(path).notSince.event")
            try validate(since, at: "\(path).notSince.since")
        }
    }

    func validate(_ event: Event, at path: String) throws {
        if event.name.isEmpty || event.name.utf8.contains(0) {
            throw ProfileError("\(path).name: must not be empty or contain NUL")
        }
        if let window = event.within { try validate(window, at: "\(path).within") }
        for (index, condition) in (event.where ?? []).enumerated() {
            try ComputedTraitDefinitions.validate(
                condition.property, condition.op, condition.value,
                type: catalog?.propertyType(event: event.name, key: condition.property),
                timestamps: true, subject: "property", keyPath: "\(path).where[\(index)].property", at: "\(path).where[\(index)]")
        }
    }

    func validate(_ window: Window, at path: String) throws {
        if !(1...36_500).contains(window.days) {
            throw ProfileError("\(path).days: must be between 1 and 36500, got \(window.days)")
        }
    }

    func validate(fields: [SegmentField], at path: String) throws {
        var names: [String: Int] = [:]
        for (index, field) in fields.enumerated() {
            let at = "\(path)[\(index)]"
            guard Catalog.isValidColumnName(field.name) else {
                throw ProfileError("\(at).name: '\(field.name)' is not a valid column name ([a-z_][a-z0-9_]*, at most 63 bytes)")
            }
            if field.name == "profile_id" { throw ProfileError("\(at).name: 'profile_id' is always the first column") }
            if let earlier = names[field.name] {
                throw ProfileError("\(at).name: '\(field.name)' is already the name of \(path)[\(earlier)]")
            }
            names[field.name] = index
            switch (field.trait, field.computed) {
            case (let key?, nil):
                if key.isEmpty || key.utf8.contains(0) { throw ProfileError("\(at).trait: must not be empty or contain NUL") }
            case (nil, let name?):
                if computedType(name) == nil {
                    throw ProfileError("\(at).computed: unknown computed trait '\(name)' (\(computedNames))")
                }
            default:
                throw ProfileError("\(at): give exactly one of \"trait\" and \"computed\"")
            }
        }
    }
}
