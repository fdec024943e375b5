//! The module's schema: webhook endpoints, what each one subscribes to, and the delivery log.

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

/// Endpoint lifecycle (enabled, or disabled with a reason and time; `failing_since` is the
/// first failure since the last success), secret rotation (the previous secret and until
/// when it still signs), throttling (`max_in_flight`, `rate_limit` per second) and custom
/// static headers (a JSON object); and the delivery log: one row per message and endpoint
/// (with what a re-send needs) and one per attempt, each indexed for the endpoint's page.
const WEBHOOKS_AS_A_PRODUCT: &str = "\
ALTER TABLE notifications_webhook_endpoints ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE notifications_webhook_endpoints ADD COLUMN disabled_at BIGINT;
ALTER TABLE notifications_webhook_endpoints ADD COLUMN disabled_reason TEXT;
ALTER TABLE notifications_webhook_endpoints ADD COLUMN failing_since BIGINT;
ALTER TABLE notifications_webhook_endpoints ADD COLUMN previous_secret TEXT;
ALTER TABLE notifications_webhook_endpoints ADD COLUMN previous_secret_until BIGINT;
ALTER TABLE notifications_webhook_endpoints ADD COLUMN max_in_flight BIGINT NOT NULL DEFAULT 4;
ALTER TABLE notifications_webhook_endpoints ADD COLUMN rate_limit BIGINT;
ALTER TABLE notifications_webhook_endpoints ADD COLUMN headers TEXT NOT NULL DEFAULT '{}';
CREATE TABLE notifications_webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    event_version BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    ids TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX notifications_webhook_deliveries_by_endpoint
    ON notifications_webhook_deliveries (endpoint_id, occurred_at, id);
CREATE INDEX notifications_webhook_deliveries_by_age
    ON notifications_webhook_deliveries (updated_at);
CREATE TABLE notifications_webhook_attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    attempted_at BIGINT NOT NULL,
    status_code BIGINT,
    duration_ms BIGINT NOT NULL,
    response TEXT NOT NULL,
    error TEXT,
    succeeded BIGINT NOT NULL
);
CREATE INDEX notifications_webhook_attempts_by_delivery
    ON notifications_webhook_attempts (delivery_id, attempted_at);
CREATE INDEX notifications_webhook_attempts_by_endpoint
    ON notifications_webhook_attempts (endpoint_id, attempted_at);
";

/// The module's migrations, in version order.
pub fn migrations() -> Vec<Migration> {
    vec![
        Migration::portable(
            2026112621,
            "notifications: create notifications_webhook_endpoints and notifications_webhook_subscriptions",
            CREATE_WEBHOOK_ENDPOINTS,
        ),
        Migration::portable(
            2026120310,
            "notifications: webhook endpoint lifecycle, rotation, throttling, headers; the delivery log",
            WEBHOOKS_AS_A_PRODUCT,
        ),
    ]
}
