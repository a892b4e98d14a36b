import Foundation
import TributaryCollection
import TributaryModel

/// What the real-time identity stage remembers of the graph between its batches: the stored node of identifiers it
/// has met (id, profile, hub), and where the profiles it merged away went. A batch looks its known identifiers up
/// here instead of in `cdp.identity_nodes`; only identifiers it has not met (mostly new ones) are read from the table.
///
/// The stage is the graph's only writer while it holds its processor lock, and everything else that writes
/// `cdp.identity_nodes` (a rebuild, a rules change's splits, a privacy deletion, another process running the stage,
/// an analyst's own SQL) either moves the stage's checkpoint or advances `cdp.identity_graph_epoch`, which a
/// statement trigger on the table advances on every change. A batch uses the cache only when both are where this
/// cache left them after the last batch it saw commit; otherwise it starts empty. It changes only after a batch
/// commits (``commit(_:)``), and is emptied when a batch splits hubs or fails; past ``capacity`` nodes it keeps a
/// random half (which bounds its memory: about 150 bytes a node).
package final class IdentifierCache: @unchecked Sendable {
    /// What a committed batch leaves in the cache.
    package struct Update {
        /// The batch's nodes as the batch read or created them (profiles before its own merges).
        var nodes: [Identifier: StoredNode]
        /// Profiles that existed before the batch and were merged into another by it.
        var redirects: [UUID: UUID]
        /// The checkpoint and graph epoch after the batch, read inside its transaction.
        var checkpoint: Int64
        var epoch: Int64
        /// The batch split hubs (nodes moved without their whole profile): forget everything.
        var forget: Bool
        /// The rules the batch ran under (for ``profiles(for:)``).
        var rules = IdentityRules()
    }

    /// The most nodes kept; past it a random half is kept.
    let capacity: Int
    private let lock = NSLock()
    private var nodes: [Identifier: StoredNode] = [:]
    private var redirects: [UUID: UUID] = [:]
    private var position: (checkpoint: Int64, epoch: Int64)?
    /// The rules of the last committed batch: how ``profiles(for:)`` normalizes and orders identifiers.
    private var rules: IdentityRules?

    init(capacity: Int = 150_000) {
        self.capacity = capacity
    }

    /// The cached nodes among `identifiers` with their current profiles, for a batch starting at `checkpoint` with the
    /// graph at `epoch`; nothing (and the cache emptied) if the graph may have changed since the cache last saw it.
    func nodes(_ identifiers: some Sequence<Identifier>, checkpoint: Int64, epoch: Int64) -> [Identifier: StoredNode] {
        lock.withLock {
            guard let position, position == (checkpoint, epoch) else {
                forgetLocked()
                return [:]
            }
            var found: [Identifier: StoredNode] = [:]
            for identifier in identifiers {
                guard var node = nodes[identifier] else { continue }
                node.profile = resolveLocked(node.profile)
                found[identifier] = node
            }
            return found
        }
    }

    /// Records a committed batch.
    func commit(_ update: Update) {
        lock.withLock {
            rules = update.rules
            if update.forget {
                forgetLocked()
                return
            }
            for (from, into) in update.redirects { redirects[from] = into }
            for (identifier, node) in update.nodes { nodes[identifier] = node }
            position = (update.checkpoint, update.epoch)
            if nodes.count > capacity || redirects.count > capacity / 4 { evictLocked() }
        }
    }

    /// Keeps a random half of the nodes, each with its current profile, so the redirects can go.
    private func evictLocked() {
        var kept: [Identifier: StoredNode] = [:]
        kept.reserveCapacity(nodes.count / 2 + 1)
        var generator = SystemRandomNumberGenerator()
        for (identifier, node) in nodes where Bool.random(using: &generator) {
            var current = node
            current.profile = resolveLocked(node.profile)
            kept[identifier] = current
        }
        nodes = kept
        redirects.removeAll(keepingCapacity: false)
    }

    /// Empties the cache (a batch failed: what it read may not have been committed).
    func forget() {
        lock.withLock { forgetLocked() }
    }

    var count: Int { lock.withLock { nodes.count } }

    private func forgetLocked() {
        nodes.removeAll(keepingCapacity: false)
        redirects.removeAll(keepingCapacity: false)
        position = nil
    }

    /// Follows merges to the live profile, shortening the path as it goes.
    private func resolveLocked(_ profile: UUID) -> UUID {
        var current = profile
        var path: [UUID] = []
        while let next = redirects[current] {
            path.append(current)
            current = next
            if path.count > 10_000 { break }  // a cycle cannot happen (merges go to live profiles); never hang on one
        }
        for visited in path.dropLast() { redirects[visited] = current }
        return current
    }
}

extension IdentifierCache: ProfileHints {
    /// Guesses each event's profile from its user id and anonymous id as the engine would stamp it: the profile of
    /// the cached ones (none if they name two profiles: a merge only the stage may decide); else the profile the first
    /// unknown one in priority order would found; else, when all are hubs, the first hub's own. Other identifiers
    /// (traits, external ids) and blocked patterns are not looked at: the stage corrects what this gets wrong.
    package func profiles(for events: [IncomingEvent]) -> [UUID?] {
        lock.withLock {
            guard let rules else { return events.map { _ in nil } }
            return events.map { event -> UUID? in
                var known: UUID?
                var unknown: Identifier?
                var hub: Identifier?
                for kind in ["user_id", "anonymous_id"] {
                    guard let raw = kind == "user_id" ? event.userID : event.anonymousID,
                        let identifier = rules.plainIdentifier(kind: kind, raw)
                    else { continue }
                    if let node = nodes[identifier] {
                        if node.isHub {
                            if hub.map({ rules.precedes(identifier, $0) }) ?? true { hub = identifier }
                            continue
                        }
                        let profile = resolveLocked(node.profile)
                        if let known, known != profile { return nil }
                        known = profile
                    } else if unknown.map({ rules.precedes(identifier, $0) }) ?? true {
                        unknown = identifier
                    }
                }
                return known ?? unknown?.foundedProfileID ?? hub?.foundedProfileID
            }
        }
    }
}
