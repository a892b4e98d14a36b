import Postgres

/// A failure Tributary reports to a person: its `description` is one line that names what is wrong (the file path
/// and key of a bad definition, the sync or segment, the value refused), with no type name or stack around it.
///
/// Every error type of the project conforms, one per domain (``SyncError``, ``ProfileError``, ``IdentityError``, …), so
/// that callers can still tell them apart (`catch let error as SyncError`) while everything that shows errors treats
/// them alike: the CLI prints `error: <description>` and exits with status 1 for any of them, and the HTTP APIs and
/// the console put the description in their answers.
///
/// ```swift
/// do { try await store.apply(definitions) } catch let error as any ReportedError { print("error: \(error)") }
/// ```
public protocol ReportedError: Error, CustomStringConvertible, Sendable {}

extension PostgresError: ReportedError {}
extension JSONParseError: ReportedError {}
