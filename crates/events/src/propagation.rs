//! W3C trace context across hops the process cannot see: into a stored job and out of it,
//! into an outbound request.
//!
//! The correlation id ([`crate::context`]) names a chain for people; a tracing backend
//! wants the W3C `traceparent` of the span that caused each piece of work. When the app
//! exports traces it installs a [`Propagation`] once at start: the runtime stores
//! [`current_traceparent`] with each job it enqueues and continues the job's span from it
//! ([`continue_trace`]); an outbound webhook sends it. Without one (the default) both are
//! no-ops — nothing is stored, nothing is parsed — and no module knows which tracing library
//! is behind them.

use std::sync::OnceLock;

/// How the app's trace exporter reads and continues W3C trace context.
#[derive(Debug, Clone, Copy)]
pub struct Propagation {
    /// The `traceparent` of the current span, when it is being traced.
    pub current: fn() -> Option<String>,
    /// Makes `span` a child of the remote span a stored `traceparent` names.
    pub continue_from: fn(&tracing::Span, &str),
}

static INSTALLED: OnceLock<Propagation> = OnceLock::new();

/// Installs the process's propagation (the first call wins: one exporter per process).
pub fn install(propagation: Propagation) {
    let _ = INSTALLED.set(propagation);
}

/// Whether traces are exported: spans that exist only for the trace (a publish, an outbound
/// call) are created only then, so an unset endpoint costs nothing.
pub fn enabled() -> bool {
    INSTALLED.get().is_some()
}

/// The current span's `traceparent`; `None` when traces are not exported.
pub fn current_traceparent() -> Option<String> {
    INSTALLED.get().and_then(|p| (p.current)())
}

/// Continues `span` from a stored or received `traceparent` (nothing without one, or when
/// traces are not exported).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let (Some(p), Some(tp)) = (INSTALLED.get(), traceparent) {
        (p.continue_from)(span, tp);
    }
}
