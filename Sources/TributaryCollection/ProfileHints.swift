import Foundation
import TributaryModel

/// Guesses, at ingest, the profile each incoming event will be stamped with, so the event can be stored with its
/// `profile_id` already set instead of being rewritten by the identity stage a moment later.
///
/// A guess is only a hint: the identity stage still resolves every event and corrects any stamp that differs from
/// its own (after a merge, a split, a rules change, or an identifier it had not met), and the stages that follow it
/// read events only up to its checkpoint. Until the identity stage has passed an event, an analyst's query may see
/// the guessed profile on it. In `tributary serve` the identity stage's identifier cache gives the hints.
public protocol ProfileHints: Sendable {
    /// The guessed profile of each event (nil: no guess; stored unstamped), in the order given.
    func profiles(for events: [IncomingEvent]) -> [UUID?]
}
