//! The module's background work: the jobs its listeners enqueue, and the event subjects
//! those jobs carry (ids only — everything else is fetched when the job runs).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use events::{
    Event, ImportCompleted, InvoiceIssued, InvoiceOverdue, InvoicePaid, Job, RecordCreated,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Deliver one event to one webhook endpoint, signed, on the `webhooks` queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverWebhook {
    /// The endpoint to deliver to.
    pub endpoint_id: Uuid,
    /// The event delivered; `webhook-id` is `msg_<event_id>` on every attempt and replay.
    pub event_id: Uuid,
    /// Its name, e.g. `record.created` (the body's `type`).
    pub event: String,
    /// Its payload version.
    pub event_version: u32,
    /// When it happened (the body's `timestamp`).
    pub occurred_at: DateTime<Utc>,
    /// The event payload's id fields, e.g. `{"record_id": "…"}`.
    pub ids: BTreeMap<String, Uuid>,
    /// Set on a re-send by `POST /webhook-endpoints/{id}/recover`: when it was asked for
    /// (unix ms), so the re-send is a job of its own (with the same `webhook-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<i64>,
}

impl Job for DeliverWebhook {
    const TYPE: &'static str = "notifications.deliver_webhook";
    const QUEUE: &'static str = "webhooks";

    /// One delivery per event and endpoint, however often the listener runs; one more per
    /// recovery.
    fn unique_key(&self) -> Option<String> {
        Some(match self.recovery {
            None => format!("{}:{}", self.event_id, self.endpoint_id),
            Some(at) => format!("{}:{}:recover:{at}", self.event_id, self.endpoint_id),
        })
    }
}

/// Email a record's owner that one of its invoices was issued or paid, on the `emails` queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendInvoiceEmail {
    /// The event that asked for the email.
    pub event_id: Uuid,
    /// `invoice.issued` or `invoice.paid`: which email to write.
    pub event: String,
    /// The invoice the email is about.
    pub invoice_id: Uuid,
    /// The record it bills (whose owner is written to).
    pub record_id: Uuid,
}

impl Job for SendInvoiceEmail {
    const TYPE: &'static str = "notifications.send_invoice_email";
    const QUEUE: &'static str = "emails";

    /// One email per event.
    fn unique_key(&self) -> Option<String> {
        Some(self.event_id.to_string())
    }
}

/// What an event is about, decoded from a v1 payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subject {
    /// `record.created`.
    Record(RecordCreated),
    /// `invoice.issued`.
    InvoiceIssued(InvoiceIssued),
    /// `invoice.paid`.
    InvoicePaid(InvoicePaid),
    /// `invoice.overdue`.
    InvoiceOverdue(InvoiceOverdue),
    /// `import.completed`.
    Import(ImportCompleted),
}

impl Subject {
    /// Decodes a payload of a v1 catalog event; anything else is a reason to dead-letter.
    pub(crate) fn decode(
        name: &str,
        version: u32,
        payload: &serde_json::Value,
    ) -> Result<Self, String> {
        fn typed<E: Event>(version: u32, payload: &serde_json::Value) -> Result<E, String> {
            if version != E::VERSION {
                return Err(format!(
                    "{}.v{version} is not a version this module delivers (expected v{})",
                    E::NAME,
                    E::VERSION
                ));
            }
            serde_json::from_value(payload.clone())
                .map_err(|e| format!("payload of {}.v{version} does not decode: {e}", E::NAME))
        }
        Ok(match name {
            RecordCreated::NAME => Self::Record(typed(version, payload)?),
            InvoiceIssued::NAME => Self::InvoiceIssued(typed(version, payload)?),
            InvoicePaid::NAME => Self::InvoicePaid(typed(version, payload)?),
            InvoiceOverdue::NAME => Self::InvoiceOverdue(typed(version, payload)?),
            ImportCompleted::NAME => Self::Import(typed(version, payload)?),
            other => return Err(format!("{other:?} is not an event this module delivers")),
        })
    }

    /// The payload's id fields by name.
    pub(crate) fn ids(&self) -> BTreeMap<String, Uuid> {
        let pairs: Vec<(&str, Uuid)> = match self {
            Self::Record(e) => vec![("record_id", e.record_id)],
            Self::InvoiceIssued(e) => {
                vec![("invoice_id", e.invoice_id), ("record_id", e.record_id)]
            }
            Self::InvoicePaid(e) => vec![("invoice_id", e.invoice_id), ("record_id", e.record_id)],
            Self::InvoiceOverdue(e) => {
                vec![("invoice_id", e.invoice_id), ("record_id", e.record_id)]
            }
            Self::Import(e) => vec![("import_id", e.import_id)],
        };
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_payloads_decode_and_give_back_their_ids() {
        let record = Uuid::now_v7();
        let invoice = Uuid::now_v7();
        let subject = Subject::decode(
            "invoice.paid",
            1,
            &json!({"invoice_id": invoice, "record_id": record}),
        )
        .unwrap();
        let ids = subject.ids();
        assert_eq!(ids["invoice_id"], invoice);
        assert_eq!(ids["record_id"], record);
        // The ids round-trip through a job payload.
        let again = Subject::decode("invoice.paid", 1, &serde_json::to_value(&ids).unwrap());
        assert_eq!(again.unwrap(), subject);
    }

    #[test]
    fn unknown_names_versions_and_shapes_are_refused() {
        let id = Uuid::now_v7();
        assert!(Subject::decode("record.deleted", 1, &json!({"record_id": id})).is_err());
        assert!(Subject::decode("record.created", 2, &json!({"record_id": id})).is_err());
        assert!(Subject::decode("record.created", 1, &json!({"record": id})).is_err());
        assert!(
            Subject::decode("record.created", 1, &json!({"record_id": id, "title": "x"})).is_err()
        );
    }

    #[test]
    fn unique_keys_dedupe_per_event_and_endpoint() {
        let job = DeliverWebhook {
            endpoint_id: Uuid::nil(),
            event_id: Uuid::max(),
            event: "record.created".into(),
            event_version: 1,
            occurred_at: DateTime::from_timestamp_millis(0).unwrap(),
            ids: BTreeMap::new(),
            recovery: None,
        };
        let recovery = DeliverWebhook {
            recovery: Some(7),
            ..job.clone()
        };
        assert_eq!(
            recovery.unique_key().unwrap(),
            format!("{}:{}:recover:7", Uuid::max(), Uuid::nil())
        );
        assert_eq!(
            job.unique_key().unwrap(),
            format!("{}:{}", Uuid::max(), Uuid::nil())
        );
        let email = SendInvoiceEmail {
            event_id: Uuid::max(),
            event: "invoice.paid".into(),
            invoice_id: Uuid::nil(),
            record_id: Uuid::nil(),
        };
        assert_eq!(email.unique_key().unwrap(), Uuid::max().to_string());
    }
}
