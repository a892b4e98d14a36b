import TributaryModel
extension DestinationRegistry {
    /// The destinations that need no HTTP: `file` and `postgres`.
    public static func core() -> DestinationRegistry {
        var registry = DestinationRegistry()
        registry.register("file", validate: FileDestination.validate) { try FileDestination.make($0) }
        registry.register("postgres", validate: TableDestination.validate) { try await TableDestination.make($0) }
        return registry
    }
}
