//! The trace context: which chain a piece of work belongs to and what caused it.
//!
//! The HTTP edge and the job runtime set it with [`TraceContext::scope`]; the outbox and the
//! job queue read it with [`TraceContext::current`]. Domain code never threads ids by hand.

use std::fmt;
use std::future::Future;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The id that follows one chain from the HTTP request to the outbound webhook.
///
/// Usually a UUID, but a caller's own `x-correlation-id` is adopted as sent when it is
/// 1–128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CorrelationId(String);

impl CorrelationId {
    /// A fresh random correlation id.
    pub fn new() -> Self {
        Self(Uuid::now_v7().to_string())
    }

    /// Accepts a caller-supplied id, or `None` when it is empty, too long or not printable.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which chain the current work belongs to, and the message that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The chain.
    pub correlation_id: CorrelationId,
    /// The request, event or job whose handling is running now; what it publishes or
    /// enqueues names this as its cause.
    pub causation_id: Option<Uuid>,
}

impl TraceContext {
    /// A context for a new chain with no cause (e.g. a CLI action).
    pub fn new_chain() -> Self {
        Self {
            correlation_id: CorrelationId::new(),
            causation_id: None,
        }
    }

    /// The context of the task running now, if one was set.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// The current context, or a new chain when the caller set none.
    pub fn current_or_new() -> Self {
        Self::current().unwrap_or_else(Self::new_chain)
    }

    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}
