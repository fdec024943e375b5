//! The app's own listener: turns `endpoint.disabled` into a signed operator alert (through
//! the same sink as dead letters), so someone hears that a customer's endpoint stopped
//! receiving deliveries. A module without tables or routes, named `alerts`.

use std::sync::Arc;

use async_trait::async_trait;
use events::{
    DbConn, EndpointDisabled, EndpointDisabledReason, Event, EventEnvelope, EventKey, JobError,
    Listener, Module,
};
use runtime::alerts::{Alert, AlertSink};
use serde_json::json;

/// Raises `webhook_endpoint_disabled` for every `endpoint.disabled`.
#[derive(Debug)]
pub struct EndpointDisabledAlert {
    sink: Arc<dyn AlertSink>,
}

#[async_trait]
impl Listener for EndpointDisabledAlert {
    fn name(&self) -> &'static str {
        "alerts.on_endpoint_disabled_raise_alert"
    }

    fn consumes(&self) -> Vec<EventKey> {
        vec![EndpointDisabled::key()]
    }

    async fn handle(&self, _tx: &mut DbConn, event: &EventEnvelope) -> Result<(), JobError> {
        let disabled: EndpointDisabled = serde_json::from_value(event.payload.clone())
            .map_err(|e| JobError::poison(format!("endpoint.disabled does not decode: {e}")))?;
        let why = match disabled.reason {
            EndpointDisabledReason::Gone => "the receiver answered 410 Gone",
            EndpointDisabledReason::Failing => {
                "every delivery failed for longer than [webhooks] disable_after"
            }
        };
        self.sink.raise(Alert {
            kind: "webhook_endpoint_disabled",
            subject: disabled.endpoint_id.to_string(),
            message: format!(
                "webhook endpoint {} was disabled: {why}; re-enable it with PATCH /webhook-endpoints/{{id}} and re-send with POST /webhook-endpoints/{{id}}/recover",
                disabled.endpoint_id
            ),
            detail: json!({"endpoint_id": disabled.endpoint_id, "reason": disabled.reason}),
        });
        Ok(())
    }
}

/// The `alerts` module: the listener above, nothing else.
pub fn module(sink: Arc<dyn AlertSink>) -> Module {
    Module {
        name: "alerts",
        migrations: Vec::new(),
        publishes: Vec::new(),
        listeners: vec![Arc::new(EndpointDisabledAlert { sink })],
        jobs: Vec::new(),
        routes: axum::Router::new(),
        retention: Vec::new(),
        schedules: Vec::new(),
    }
}
