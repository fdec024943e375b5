//! The module's schema: webhook endpoints and what each one subscribes to.

use events::Migration;

/// Endpoints (soft-deleted, so a trace can still name a deleted endpoint's URL; the secret
/// is wiped on delete) and one subscription row per event name (`*` for all), indexed by
/// name so the listener finds an event's endpoints without scanning them all.
const CREATE_WEBHOOK_ENDPOINTS: &str = "\
CREATE TABLE notifications_webhook_endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE TABLE notifications_webhook_subscriptions (
    endpoint_id TEXT NOT NULL REFERENCES notifications_webhook_endpoints (id),
    event_name TEXT NOT NULL,
    ordinal BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, event_name)
);
CREATE INDEX notifications_webhook_subscriptions_by_event
    ON notifications_webhook_subscriptions (event_name, endpoint_id);
";

/// The module's migrations, in version order.
pub fn migrations() -> Vec<Migration> {
    vec![Migration::portable(
        2026112621,
        "notifications: create notifications_webhook_endpoints and notifications_webhook_subscriptions",
        CREATE_WEBHOOK_ENDPOINTS,
    )]
}
