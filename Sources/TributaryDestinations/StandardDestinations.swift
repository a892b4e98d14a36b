import TributaryModel
import TributarySyncs

extension DestinationRegistry {
    /// Every destination Tributary ships: `file` and `postgres` (from the core), `webhook`, `http` (defined in the sync
    /// file), `braze`, `meta_audience`, `google_ads_customer_match`.
    public static func standard(sender: HTTPSender = HTTPSender()) -> DestinationRegistry {
        var registry = DestinationRegistry.core()
        registry.register("webhook", validate: WebhookDestination.validate) { try WebhookDestination($0, sender: sender) }
        registry.register("http", validate: HTTPDestination.validate, validateSync: HTTPDestination.validate(sync:)) {
            try HTTPDestination($0, sender: sender)
        }
        registry.register("braze", validate: BrazeDestination.validate) { try BrazeDestination($0, sender: sender) }
        registry.register("meta_audience", validate: MetaAudienceDestination.validate) {
            try MetaAudienceDestination($0, sender: sender)
        }
        registry.register("google_ads_customer_match", validate: GoogleAdsCustomerMatchDestination.validate) {
            try GoogleAdsCustomerMatchDestination($0, sender: sender)
        }
        return registry
    }
}
