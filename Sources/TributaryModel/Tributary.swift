/// Facts about this build of Tributary.
public enum Tributary {
    /// The release this source tree is (semantic versioning; see CHANGELOG.md).
    public static let version = "0.1.0"
}
