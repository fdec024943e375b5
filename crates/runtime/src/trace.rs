//! Following a chain: every request, event, listener delivery, job and attempt that shares a
//! correlation id, assembled into a tree by causation.
//!
//! "Did we deliver the webhook?" is answered by the leaf under the request: the delivery
//! job's attempts with the receiver's status code, duration and response.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use events::Db;
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::admin::{AttemptRecord, decode_attempt};
use crate::error::RuntimeError;
use crate::worker::execute::millis;

/// An inbound request, as recorded by the HTTP edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The request's id (the causation of what it published).
    pub id: Uuid,
    /// The chain it started or joined.
    pub correlation_id: String,
    /// HTTP method.
    pub method: String,
    /// Path, without the query string.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// When it arrived.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i64,
}

/// Records inbound requests, all in one statement (see [`crate::request_log`]).
///
/// # Errors
/// Fails when the database does.
pub async fn record_requests(db: &Db, records: &[RequestRecord]) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..records.len())
        .map(|i| {
            let p = i * 7;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO keel_requests (id, correlation_id, method, path, status, started_at, duration_ms) \
         VALUES {}",
        rows.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for r in records {
        query = query
            .bind(r.id.to_string())
            .bind(r.correlation_id.clone())
            .bind(r.method.clone())
            .bind(r.path.clone())
            .bind(i32::from(r.status))
            .bind(r.started_at.timestamp_millis())
            .bind(r.duration_ms);
    }
    query.execute(db.pool()).await?;
    Ok(())
}

/// One node of a trace tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceNode {
    /// An inbound HTTP request.
    Request {
        /// Its id.
        id: String,
        /// When it arrived.
        at: DateTime<Utc>,
        /// HTTP method.
        method: String,
        /// Path.
        path: String,
        /// Response status.
        status: i32,
        /// How long it took.
        duration_ms: i64,
        /// What it caused.
        children: Vec<TraceNode>,
    },
    /// A published event.
    Event {
        /// Its id.
        id: String,
        /// When it happened.
        at: DateTime<Utc>,
        /// Its name.
        name: String,
        /// Its version.
        version: i32,
        /// Its id fields.
        payload: serde_json::Value,
        /// Where it crossed to or from another deployment: "published to subject X with
        /// sequence N" / "consumed from stream S, sequence N".
        #[serde(skip_serializing_if = "Vec::is_empty")]
        broker: Vec<String>,
        /// The listener deliveries it caused.
        children: Vec<TraceNode>,
    },
    /// A job: a listener delivery (`listener:<name>`) or background work.
    Job {
        /// Its id.
        id: String,
        /// When it was enqueued.
        at: DateTime<Utc>,
        /// Its queue.
        queue: String,
        /// Its type.
        job_type: String,
        /// Its state now.
        state: String,
        /// Every attempt, oldest first.
        attempts: Vec<AttemptRecord>,
        /// What it caused (events it published, jobs it enqueued).
        children: Vec<TraceNode>,
    },
}

impl TraceNode {
    fn id(&self) -> &str {
        match self {
            Self::Request { id, .. } | Self::Event { id, .. } | Self::Job { id, .. } => id,
        }
    }

    fn at(&self) -> DateTime<Utc> {
        match self {
            Self::Request { at, .. } | Self::Event { at, .. } | Self::Job { at, .. } => *at,
        }
    }

    fn children_mut(&mut self) -> &mut Vec<TraceNode> {
        match self {
            Self::Request { children, .. }
            | Self::Event { children, .. }
            | Self::Job { children, .. } => children,
        }
    }
}

/// A whole chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// The correlation id.
    pub correlation_id: String,
    /// Nodes with no recorded cause (normally one request), oldest first.
    pub roots: Vec<TraceNode>,
    /// How many nodes the tree holds.
    pub nodes: usize,
}

/// Assembles the chain of `correlation_id`.
///
/// # Errors
/// [`RuntimeError::NotFound`] when nothing carries this correlation id.
pub async fn trace(db: &Db, correlation_id: &str) -> Result<Trace, RuntimeError> {
    let mut nodes: Vec<(Option<String>, TraceNode)> = Vec::new();
    for row in sqlx::query(
        "SELECT id, method, path, status, started_at, duration_ms FROM keel_requests \
         WHERE correlation_id = $1",
    )
    .bind(correlation_id)
    .fetch_all(db.pool())
    .await?
    {
        nodes.push((
            None,
            TraceNode::Request {
                id: row.try_get("id")?,
                at: millis(row.try_get("started_at")?),
                method: row.try_get("method")?,
                path: row.try_get("path")?,
                status: row.try_get("status")?,
                duration_ms: row.try_get("duration_ms")?,
                children: Vec::new(),
            },
        ));
    }
    for row in sqlx::query(
        "SELECT id, name, version, occurred_at, causation_id, payload FROM keel_events \
         WHERE correlation_id = $1",
    )
    .bind(correlation_id)
    .fetch_all(db.pool())
    .await?
    {
        let payload: String = row.try_get("payload")?;
        nodes.push((
            row.try_get("causation_id")?,
            TraceNode::Event {
                id: row.try_get("id")?,
                at: millis(row.try_get("occurred_at")?),
                name: row.try_get("name")?,
                version: row.try_get("version")?,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                broker: Vec::new(),
                children: Vec::new(),
            },
        ));
    }
    let mut crossings = broker_crossings(db, correlation_id).await?;
    for (_, node) in &mut nodes {
        if let TraceNode::Event { id, broker, .. } = node
            && let Some(notes) = crossings.remove(id.as_str())
        {
            *broker = notes;
        }
    }
    // Every attempt of the chain in one query, not one per job (an import's chain has
    // thousands of jobs).
    let mut attempts: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
    for row in sqlx::query(
        "SELECT job_id, attempt, worker, started_at, finished_at, outcome, error, detail \
         FROM keel_job_attempts WHERE job_id IN \
           (SELECT id FROM keel_jobs WHERE correlation_id = $1) \
         ORDER BY started_at, attempt",
    )
    .bind(correlation_id)
    .fetch_all(db.pool())
    .await?
    {
        let job_id: String = row.try_get("job_id")?;
        attempts
            .entry(job_id)
            .or_default()
            .push(decode_attempt(&row)?);
    }
    for row in sqlx::query(
        "SELECT id, queue, job_type, state, enqueued_at, causation_id FROM keel_jobs \
         WHERE correlation_id = $1",
    )
    .bind(correlation_id)
    .fetch_all(db.pool())
    .await?
    {
        let id: String = row.try_get("id")?;
        let attempts = attempts.remove(&id).unwrap_or_default();
        nodes.push((
            row.try_get("causation_id")?,
            TraceNode::Job {
                at: millis(row.try_get("enqueued_at")?),
                queue: row.try_get("queue")?,
                job_type: row.try_get("job_type")?,
                state: row.try_get("state")?,
                attempts,
                id,
                children: Vec::new(),
            },
        ));
    }
    if nodes.is_empty() {
        return Err(RuntimeError::NotFound(format!(
            "nothing is recorded for correlation id {correlation_id}"
        )));
    }
    let count = nodes.len();
    Ok(Trace {
        correlation_id: correlation_id.to_owned(),
        roots: assemble(nodes),
        nodes: count,
    })
}

/// Event id → how it crossed the broker: published by this deployment's relay (subject,
/// stream, sequence), or consumed here by a listener's durable consumer.
async fn broker_crossings(
    db: &Db,
    correlation_id: &str,
) -> Result<HashMap<String, Vec<String>>, RuntimeError> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for row in sqlx::query(
        "SELECT event_id, subject, stream, stream_seq FROM keel_relay WHERE event_id IN \
           (SELECT id FROM keel_events WHERE correlation_id = $1) ORDER BY position",
    )
    .bind(correlation_id)
    .fetch_all(db.pool())
    .await?
    {
        let subject: String = row.try_get("subject")?;
        let stream: Option<String> = row.try_get("stream")?;
        let seq: Option<i64> = row.try_get("stream_seq")?;
        let note = match (stream, seq) {
            (Some(stream), Some(seq)) => {
                format!("published to subject {subject} with sequence {seq} (stream {stream})")
            }
            _ => format!("waiting to be published to subject {subject}"),
        };
        out.entry(row.try_get("event_id")?).or_default().push(note);
    }
    for row in sqlx::query(
        "SELECT event_id, listener, stream, stream_seq FROM keel_broker_received WHERE event_id IN \
           (SELECT id FROM keel_events WHERE correlation_id = $1) ORDER BY listener",
    )
    .bind(correlation_id)
    .fetch_all(db.pool())
    .await?
    {
        let listener: String = row.try_get("listener")?;
        let stream: String = row.try_get("stream")?;
        let seq: i64 = row.try_get("stream_seq")?;
        out.entry(row.try_get("event_id")?)
            .or_default()
            .push(format!(
                "consumed from stream {stream}, sequence {seq} (consumer {})",
                crate::broker::consumer_name(&listener)
            ));
    }
    Ok(out)
}

/// Builds the forest: each node goes under its cause when the cause is in the chain.
fn assemble(mut nodes: Vec<(Option<String>, TraceNode)>) -> Vec<TraceNode> {
    nodes.sort_by_key(|(_, n)| std::cmp::Reverse(n.at()));
    let ids: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (_, n))| (n.id().to_owned(), i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, (parent, _)) in nodes.iter().enumerate() {
        match parent.as_ref().and_then(|p| ids.get(p)) {
            Some(&p) if p != i => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let mut slots: Vec<Option<TraceNode>> = nodes.into_iter().map(|(_, n)| Some(n)).collect();
    fn build(
        i: usize,
        slots: &mut Vec<Option<TraceNode>>,
        children: &HashMap<usize, Vec<usize>>,
        depth: usize,
    ) -> Option<TraceNode> {
        let mut node = slots.get_mut(i)?.take()?;
        if depth < 64 {
            let mut kids: Vec<TraceNode> = children
                .get(&i)
                .map(|c| {
                    c.iter()
                        .filter_map(|&k| build(k, slots, children, depth + 1))
                        .collect()
                })
                .unwrap_or_default();
            kids.sort_by_key(TraceNode::at);
            *node.children_mut() = kids;
        }
        Some(node)
    }
    let mut out: Vec<TraceNode> = roots
        .into_iter()
        .filter_map(|i| build(i, &mut slots, &children, 0))
        .collect();
    out.sort_by_key(TraceNode::at);
    out
}
