import Foundation

/// One event as the identity engine sees it: its usable identifiers and the hub values it carries.
public struct ResolverEvent: Sendable {
    public var seq: Int64
    public var messageID: String?
    /// Usable identifiers (not blocked, not hubs), deduplicated, in priority order.
    public var identifiers: [Identifier]
    /// Hub values on the event, in priority order; used only to stamp an event that has nothing else.
    public var hubs: [Identifier]

    public init(seq: Int64, messageID: String? = nil, identifiers: [Identifier], hubs: [Identifier] = []) {
        self.seq = seq
        self.messageID = messageID
        self.identifiers = identifiers
        self.hubs = hubs
    }
}

/// The merge rule applied to each event in receive order, shared by the real-time stage, splits and the rebuild.
///
/// For one event, identifiers are taken in priority order. Each is kept when adding it (its value, or the whole
/// profile it already belongs to) to what was kept so far leaves every kind within its limit; otherwise it is
/// dropped from this event's merge: it does not join, and if it was never seen before it founds a profile of its
/// own. The kept identifiers end up in one profile: the existing profile founded first survives and the others
/// merge into it; with no existing profile, the first kept identifier founds a new one. The event is stamped with
/// that profile (an event with only hub values is stamped with the first hub's own profile; one with no identifier
/// at all gets none).
///
/// Because a component whose identifiers stay within every limit never drops anything, such a component always
/// ends as one profile, whatever the order; only components that exceed a limit depend on receive order.
public struct IdentityEngine {
    public struct Profile: Sendable {
        public var founder: Identifier
        public var foundedSeq: Int64
        /// Distinct values per kind held by the profile (active identifiers only).
        public var counts: [String: Int]
    }

    public struct Merge: Sendable {
        public var from: UUID
        public var into: UUID
        public var seq: Int64
        public var messageID: String?
        public var identifier: Identifier
    }

    public let rules: IdentityRules
    /// Profile of every identifier known to the engine (possibly merged since: resolve with `find`).
    public private(set) var profileOf: [Identifier: UUID] = [:]
    /// Profiles alive now, or merged within this run (see `redirect`).
    public private(set) var profiles: [UUID: Profile] = [:]
    /// Profiles merged away during this run: loser → survivor (follow with `find`).
    public private(set) var redirect: [UUID: UUID] = [:]
    /// Identifiers first seen by this run, with the event that introduced them.
    public private(set) var created: [Identifier: Int64] = [:]
    /// Profiles founded during this run.
    public private(set) var founded: Set<UUID> = []
    /// Merges in the order they happened.
    public private(set) var merges: [Merge] = []
    /// The profile each processed event was stamped with when processed (resolve with `find` for the final one).
    public private(set) var stamps: [(seq: Int64, profile: UUID?)] = []

    public init(rules: IdentityRules) { self.rules = rules }

    /// Adds state loaded from the database before processing: an identifier already held by a profile.
    public mutating func load(identifier: Identifier, profile: UUID) { profileOf[identifier] = profile }

    /// Adds a live profile loaded from the database (needed for profiles of identifiers that appear on events with more
    /// than one identifier; `needsProfile` tells which).
    public mutating func load(profile id: UUID, founder: Identifier, foundedSeq: Int64, counts: [String: Int]) {
        profiles[id] = Profile(founder: founder, foundedSeq: foundedSeq, counts: counts)
    }

    /// Whether processing `event` needs the profiles of its known identifiers loaded, given where its identifiers
    /// were before the run (`known`): not when they all belong to one profile already.
    public static func needsProfiles(_ event: ResolverEvent, known: (Identifier) -> UUID?) -> Bool {
        guard let first = event.identifiers.first.flatMap(known) else { return event.identifiers.count > 1 }
        return !event.identifiers.dropFirst().allSatisfy { known($0) == first }
    }

    /// The live profile `id` has become.
    public func find(_ id: UUID) -> UUID {
        var current = id
        while let next = redirect[current] { current = next }
        return current
    }

    /// The profile holding `identifier` now, if known.
    public func profile(of identifier: Identifier) -> UUID? { profileOf[identifier].map(find) }

    private func foundedBefore(_ a: UUID, _ b: UUID) -> Bool {
        let pa = profiles[a]!, pb = profiles[b]!
        if pa.foundedSeq != pb.foundedSeq { return pa.foundedSeq < pb.foundedSeq }
        return rules.precedes(pa.founder, pb.founder)
    }

    private mutating func found(_ identifier: Identifier, seq: Int64, counts: [String: Int]) -> UUID {
        let id = identifier.foundedProfileID
        profiles[id] = Profile(founder: identifier, foundedSeq: seq, counts: counts)
        redirect[id] = nil
        founded.insert(id)
        return id
    }

    private func withinLimits(_ counts: [String: Int]) -> Bool {
        counts.allSatisfy { $0.value <= rules.limit(of: $0.key) }
    }

    /// Applies one event (events must come in receive order) and returns the profile it is stamped with.
    @discardableResult
    public mutating func process(_ event: ResolverEvent) -> UUID? {
        // One known identifier: nothing to merge and no limit to check (a live profile is always within them).
        // Only identifiers of one profile: nothing to merge, no limit to check (a live profile is always within them).
        if let first = event.identifiers.first, let existing = profileOf[first] {
            let profile = find(existing)
            if event.identifiers.dropFirst().allSatisfy({ profileOf[$0].map(find) == profile }) {
                stamps.append((event.seq, profile))
                return profile
            }
        }
        var keptProfiles: [UUID] = []
        var keptNew: [Identifier] = []
        var broughtBy: [UUID: Identifier] = [:]
        var counts: [String: Int] = [:]
        for identifier in event.identifiers {
            if let existing = profileOf[identifier] {
                let profile = find(existing)
                if keptProfiles.contains(profile) { continue }
                var candidate = counts
                for (kind, count) in profiles[profile]!.counts { candidate[kind, default: 0] += count }
                if withinLimits(candidate) {
                    counts = candidate
                    keptProfiles.append(profile)
                    broughtBy[profile] = identifier
                }
            } else {
                if keptNew.contains(identifier) { continue }
                var candidate = counts
                candidate[identifier.kind, default: 0] += 1
                if withinLimits(candidate) {
                    counts = candidate
                    keptNew.append(identifier)
                } else {
                    // Dropped and never seen: it founds a profile of its own.
                    let own = found(identifier, seq: event.seq, counts: [identifier.kind: 1])
                    profileOf[identifier] = own
                    created[identifier] = event.seq
                }
            }
        }
        let stamp: UUID?
        if let first = keptProfiles.first {
            var survivor = first
            for profile in keptProfiles.dropFirst() where foundedBefore(profile, survivor) { survivor = profile }
            for profile in keptProfiles where profile != survivor {
                redirect[profile] = survivor
                merges.append(
                    Merge(
                        from: profile, into: survivor, seq: event.seq, messageID: event.messageID,
                        identifier: broughtBy[profile]!))
            }
            profiles[survivor]!.counts = counts
            for identifier in keptNew {
                profileOf[identifier] = survivor
                created[identifier] = event.seq
            }
            stamp = survivor
        } else if let founder = keptNew.first {
            let profile = found(founder, seq: event.seq, counts: counts)
            for identifier in keptNew {
                profileOf[identifier] = profile
                created[identifier] = event.seq
            }
            stamp = profile
        } else if let hub = event.hubs.first {
            stamp = hub.foundedProfileID
        } else {
            stamp = nil
        }
        stamps.append((event.seq, stamp))
        return stamp
    }

    /// Live profiles merged away during this run (those loaded from the database and those founded in it).
    public var mergedAway: Set<UUID> { Set(redirect.keys) }

    /// The profiles alive after this run: every profile the engine knows that was not merged away.
    public var liveProfiles: Set<UUID> { Set(profiles.keys).subtracting(redirect.keys) }

    /// Each processed event with the profile it ends in, after the merges that came later in this run.
    public var finalStamps: [(seq: Int64, profile: UUID?)] { stamps.map { ($0.seq, $0.profile.map(find)) } }
}
