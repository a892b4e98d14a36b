import Postgres

public enum ProfileViews { public static func refresh(_ db: PostgresConnection) async throws {} }
