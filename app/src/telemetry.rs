//! Logging set-up: `RUST_LOG` filters, `KEEL_LOG_FORMAT=json` switches to one JSON object a
//! line. The sink is a parameter so tests can capture what would be logged.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object a line.
    Json,
}

impl LogFormat {
    /// The format `KEEL_LOG_FORMAT` asks for.
    pub fn from_env() -> Self {
        match std::env::var("KEEL_LOG_FORMAT").as_deref() {
            Ok("json") => Self::Json,
            _ => Self::Pretty,
        }
    }
}

/// Installs the global subscriber writing to `sink`; a second call is a no-op.
pub fn init<W>(format: LogFormat, sink: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,lettre=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    // Already installed (tests start several apps in one process): keep the first.
    drop(result);
}
