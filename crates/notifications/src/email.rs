//! Emailing a record's owner about an invoice: fetch the invoice and record when the job
//! runs, write a plain-text message, and hand it to SMTP (or to an `.eml` file when no SMTP
//! server is configured).
//!
//! The `Message-ID` comes from the job's idempotency key, so a retry after an unacknowledged
//! send carries the same id and a receiver can drop the duplicate. Recipients appear in
//! reasons and details only masked (`o***@example.com`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use events::jobs::{HandleJob, JobDetail};
use events::queries::{InvoiceDirectory, InvoiceSummary, RecordDirectory};
use events::{Clock, Event, InvoiceIssued, InvoiceOverdue, InvoicePaid, JobContext, JobError};
use lettre::message::Mailbox;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::jobs::SendInvoiceEmail;
use crate::{NotificationsConfig, NotificationsError};

/// How long one SMTP command may take; well inside the `emails` queue's job timeout.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where emails go.
#[derive(Clone)]
pub(crate) enum Mailer {
    /// An SMTP server (pooled connections).
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// One `.eml` file per email in this folder (created on first use).
    File(PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp(_) => f.write_str("Mailer::Smtp"),
            Self::File(dir) => f.debug_tuple("Mailer::File").field(dir).finish(),
        }
    }
}

impl Mailer {
    /// SMTP when `[smtp] url` is set, else `.eml` files under `mail_dir`.
    pub(crate) fn from_config(config: &NotificationsConfig) -> Result<Self, NotificationsError> {
        match &config.smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(NotificationsError::SmtpUrl)?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                Ok(Self::Smtp(transport))
            }
            None => Ok(Self::File(config.mail_dir.clone())),
        }
    }
}

/// Parses the configured `From`.
pub(crate) fn sender(raw: &str) -> Result<Mailbox, NotificationsError> {
    raw.parse()
        .map_err(|_| NotificationsError::MailFrom(raw.to_owned()))
}

/// Runs `notifications.send_invoice_email` jobs.
#[derive(Clone)]
pub(crate) struct InvoiceEmailer {
    mailer: Mailer,
    from: Mailbox,
    clock: Arc<dyn Clock>,
    invoices: Arc<dyn InvoiceDirectory>,
    records: Arc<dyn RecordDirectory>,
}

impl std::fmt::Debug for InvoiceEmailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvoiceEmailer")
            .field("mailer", &self.mailer)
            .finish_non_exhaustive()
    }
}

impl InvoiceEmailer {
    pub(crate) fn new(
        mailer: Mailer,
        from: Mailbox,
        clock: Arc<dyn Clock>,
        invoices: Arc<dyn InvoiceDirectory>,
        records: Arc<dyn RecordDirectory>,
    ) -> Self {
        Self {
            mailer,
            from,
            clock,
            invoices,
            records,
        }
    }
}

/// Which invoice email to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvoiceNews {
    Issued,
    Paid,
    Overdue,
}

impl InvoiceNews {
    fn from_event(name: &str) -> Option<Self> {
        match name {
            InvoiceIssued::NAME => Some(Self::Issued),
            InvoicePaid::NAME => Some(Self::Paid),
            InvoiceOverdue::NAME => Some(Self::Overdue),
            _ => None,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Paid => "paid",
            Self::Overdue => "overdue",
        }
    }

    fn sentence(self) -> &'static str {
        match self {
            Self::Issued => "has been issued",
            Self::Paid => "has been paid",
            Self::Overdue => "is overdue",
        }
    }
}

#[async_trait]
impl HandleJob<SendInvoiceEmail> for InvoiceEmailer {
    async fn handle(&self, job: SendInvoiceEmail, ctx: &JobContext) -> Result<JobDetail, JobError> {
        let news = InvoiceNews::from_event(&job.event)
            .ok_or_else(|| JobError::poison(format!("{:?} is not an invoice event", job.event)))?;
        let invoice = self
            .invoices
            .find_invoice(job.invoice_id)
            .await?
            .ok_or_else(|| {
                JobError::cancel("invoice no longer exists")
                    .with_detail(json!({"invoice_id": job.invoice_id}))
            })?;
        let record = self
            .records
            .find_record(invoice.record_id)
            .await?
            .ok_or_else(|| {
                JobError::cancel("the invoice's record no longer exists")
                    .with_detail(json!({"record_id": invoice.record_id}))
            })?;
        let recipient = mask_email(&record.owner_email);
        let to: Mailbox = record.owner_email.parse().map_err(|_| {
            JobError::poison(format!(
                "the record owner's address {recipient} is not valid"
            ))
        })?;
        let message = build_message(&Letter {
            news,
            invoice: &invoice,
            title: &record.title,
            from: self.from.clone(),
            to,
            message_id: message_id(&ctx.idempotency_key, self.from.email.domain()),
            correlation_id: ctx.trace.correlation_id.as_str(),
            date: self.clock.now().into(),
        })
        .map_err(|e| JobError::poison(format!("the email could not be built: {e}")))?;

        match &self.mailer {
            Mailer::Smtp(transport) => match transport
                .send(message)
                .instrument(if events::propagation::enabled() {
                    tracing::info_span!(
                        "smtp.send",
                        otel.name = "SMTP send",
                        otel.kind = "client",
                        correlation_id = %ctx.trace.correlation_id,
                    )
                } else {
                    tracing::Span::none()
                })
                .await
            {
                Ok(response) => {
                    let first = response.message().next().unwrap_or_default();
                    let reply = mask_emails_in(&format!("{} {first}", response.code()));
                    Ok(Some(json!({
                        "recipient": recipient,
                        "smtp_reply": reply.trim_end(),
                        "transport": "smtp",
                    })))
                }
                Err(err) => Err(smtp_failure(&err, &recipient)),
            },
            Mailer::File(dir) => {
                tokio::fs::create_dir_all(dir).await.map_err(|e| {
                    JobError::retry(format!("creating the mail folder failed: {}", e.kind()))
                })?;
                let id = AsyncFileTransport::<Tokio1Executor>::new(dir)
                    .send(message)
                    .await
                    .map_err(|e| JobError::retry(format!("writing the email file failed: {e}")))?;
                Ok(Some(json!({
                    "recipient": recipient,
                    "transport": "file",
                    "file": format!("{id}.eml"),
                })))
            }
        }
    }
}

/// Permanent (5xx) refusals dead-letter at once; anything else (4xx, connection, TLS,
/// timeout) is retried.
fn smtp_failure(err: &lettre::transport::smtp::Error, recipient: &str) -> JobError {
    let reason = mask_emails_in(&err.to_string());
    let code = err.status().map(|c| c.to_string());
    let detail = json!({
        "recipient": recipient,
        "smtp_reply": code,
        "transport": "smtp",
    });
    if err.is_permanent() {
        JobError::poison(format!("SMTP server refused the email: {reason}")).with_detail(detail)
    } else {
        JobError::retry(format!("SMTP delivery failed: {reason}")).with_detail(detail)
    }
}

/// Everything one invoice email says.
struct Letter<'a> {
    news: InvoiceNews,
    invoice: &'a InvoiceSummary,
    title: &'a str,
    from: Mailbox,
    to: Mailbox,
    message_id: String,
    correlation_id: &'a str,
    date: SystemTime,
}

fn build_message(letter: &Letter<'_>) -> Result<Message, lettre::error::Error> {
    let amount = format_amount(letter.invoice.amount_cents, &letter.invoice.currency);
    let currency = &letter.invoice.currency;
    let verb = letter.news.verb();
    let subject = format!("Invoice {verb}: {amount} {currency}");
    let closing = match letter.news {
        InvoiceNews::Issued => "",
        InvoiceNews::Paid => "\nThank you for your payment.\n",
        InvoiceNews::Overdue => {
            "\nIt is still unpaid; please pay it at your earliest convenience.\n"
        }
    };
    let body = format!(
        "Hello,\n\n\
         your invoice for \"{title}\" {news}.\n\n\
         \x20 Invoice:  {id}\n\
         \x20 Record:   {title}\n\
         \x20 Amount:   {amount} {currency}\n\
         \x20 Status:   {status}\n\
         {closing}\n\
         -- \n\
         Sent by Keel. Reference: {correlation}\n",
        id = letter.invoice.invoice_id,
        news = letter.news.sentence(),
        title = letter.title,
        status = letter.invoice.status,
        correlation = letter.correlation_id,
    );
    Message::builder()
        .from(letter.from.clone())
        .to(letter.to.clone())
        .subject(subject)
        .date(letter.date)
        .message_id(Some(letter.message_id.clone()))
        .header(XCorrelationId(letter.correlation_id.to_owned()))
        .header(ContentType::TEXT_PLAIN)
        .body(body)
}

/// `X-Correlation-ID`, so a reply or bounce can be traced back to its chain.
#[derive(Debug, Clone)]
struct XCorrelationId(String);

impl Header for XCorrelationId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Correlation-ID")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `<key@domain>`: the idempotency key as is when it is a safe id, else its hash.
fn message_id(idempotency_key: &str, domain: &str) -> String {
    let safe = !idempotency_key.is_empty()
        && idempotency_key.len() <= 64
        && idempotency_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    let local = if safe {
        idempotency_key.to_owned()
    } else {
        Sha256::digest(idempotency_key.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    format!("<{local}.invoice@{domain}>")
}

/// Minor units as a decimal amount, by the currency's ISO 4217 exponent.
fn format_amount(minor: i64, currency: &str) -> String {
    let exponent = match currency.to_ascii_uppercase().as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    };
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10_u64.pow(exponent);
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = exponent as usize
    )
}

/// `owner@example.com` → `o***@example.com`: enough to tell recipients apart in a trace,
/// not enough to be personal data.
pub(crate) fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Masks every address-looking word in a server's reply (servers like to echo recipients).
fn mask_emails_in(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if !word.contains('@') {
                return word.to_owned();
            }
            let start = word.find(|c: char| c.is_alphanumeric()).unwrap_or(0);
            let end = word
                .rfind(|c: char| c.is_alphanumeric())
                .map_or(word.len(), |i| i + 1);
            if start >= end {
                return word.to_owned();
            }
            format!(
                "{}{}{}",
                &word[..start],
                mask_email(&word[start..end]),
                &word[end..]
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use chrono::DateTime;
    use events::jobs::FailureKind;
    use events::queries::RecordSummary;
    use events::{CorrelationId, TraceContext};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use uuid::Uuid;

    use super::*;

    /// Every test here runs at one fixed instant.
    fn fixed_clock() -> Arc<events::testing::FixedClock> {
        events::testing::FixedClock::at_millis(1_764_150_000_000)
    }

    struct Directory {
        invoice: Option<InvoiceSummary>,
        record: Option<RecordSummary>,
    }

    #[async_trait]
    impl InvoiceDirectory for Directory {
        async fn find_invoice(&self, _id: Uuid) -> Result<Option<InvoiceSummary>, sqlx::Error> {
            Ok(self.invoice.clone())
        }
    }

    #[async_trait]
    impl RecordDirectory for Directory {
        async fn find_record(&self, _id: Uuid) -> Result<Option<RecordSummary>, sqlx::Error> {
            Ok(self.record.clone())
        }
    }

    fn invoice() -> InvoiceSummary {
        InvoiceSummary {
            invoice_id: Uuid::now_v7(),
            record_id: Uuid::now_v7(),
            amount_cents: 1250,
            currency: "EUR".into(),
            status: "open".into(),
        }
    }

    fn record(invoice: &InvoiceSummary) -> RecordSummary {
        RecordSummary {
            record_id: invoice.record_id,
            title: "Quarterly report".into(),
            owner_email: "owner@example.com".into(),
        }
    }

    fn emailer(mailer: Mailer, directory: Directory) -> InvoiceEmailer {
        let directory = Arc::new(directory);
        InvoiceEmailer::new(
            mailer,
            sender("Keel <no-reply@keel.localhost>").unwrap(),
            fixed_clock(),
            directory.clone(),
            directory,
        )
    }

    fn job(event: &str, invoice: &InvoiceSummary) -> SendInvoiceEmail {
        SendInvoiceEmail {
            event_id: Uuid::now_v7(),
            event: event.into(),
            invoice_id: invoice.invoice_id,
            record_id: invoice.record_id,
        }
    }

    fn ctx() -> JobContext {
        JobContext {
            id: Uuid::now_v7(),
            job_type: "notifications.send_invoice_email".into(),
            queue: "emails".into(),
            attempt: 1,
            max_attempts: 6,
            timeout: std::time::Duration::from_secs(30),
            idempotency_key: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            trace: TraceContext {
                correlation_id: CorrelationId::parse("corr-1").unwrap(),
                causation_id: None,
            },
            enqueued_at: DateTime::from_timestamp(0, 0).unwrap(),
            payload: serde_json::Value::Null,
        }
    }

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("keel-mail-test-{}", Uuid::now_v7()))
    }

    #[test]
    fn amounts_follow_the_currency_exponent() {
        assert_eq!(format_amount(1250, "EUR"), "12.50");
        assert_eq!(format_amount(5, "USD"), "0.05");
        assert_eq!(format_amount(1250, "JPY"), "1250");
        assert_eq!(format_amount(1250, "KWD"), "1.250");
        assert_eq!(format_amount(-199, "EUR"), "-1.99");
        assert_eq!(format_amount(100, "XYZ"), "1.00");
    }

    #[test]
    fn emails_are_masked_everywhere_they_could_leak() {
        assert_eq!(mask_email("owner@example.com"), "o***@example.com");
        assert_eq!(mask_email("nope"), "***");
        assert_eq!(
            mask_emails_in("550 5.1.1 <bob@example.org>: Recipient address rejected"),
            "550 5.1.1 <b***@example.org>: Recipient address rejected"
        );
        assert_eq!(
            mask_emails_in("250 2.0.0 Ok: queued"),
            "250 2.0.0 Ok: queued"
        );
    }

    #[test]
    fn message_ids_come_from_the_idempotency_key() {
        assert_eq!(
            message_id("0193a1b2-c3d4", "keel.localhost"),
            "<0193a1b2-c3d4.invoice@keel.localhost>"
        );
        let hashed = message_id("key with spaces <>", "keel.localhost");
        assert_eq!(hashed, message_id("key with spaces <>", "keel.localhost"));
        assert!(hashed.starts_with('<') && !hashed.contains(' '));
    }

    #[test]
    fn the_letter_names_invoice_title_amount_and_currency() {
        let invoice = invoice();
        let message = build_message(&Letter {
            news: InvoiceNews::Paid,
            invoice: &invoice,
            title: "Quarterly report",
            from: sender("Keel <no-reply@keel.localhost>").unwrap(),
            to: "owner@example.com".parse().unwrap(),
            message_id: "<k.invoice@keel.localhost>".into(),
            correlation_id: "corr-1",
            date: fixed_clock().now().into(),
        })
        .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(text.contains("Subject: Invoice paid: 12.50 EUR"), "{text}");
        assert!(
            text.contains("Message-ID: <k.invoice@keel.localhost>"),
            "{text}"
        );
        assert!(text.contains("X-Correlation-ID: corr-1"), "{text}");
        assert!(text.contains("To: owner@example.com"), "{text}");
        assert!(text.contains(&invoice.invoice_id.to_string()), "{text}");
        assert!(text.contains("Quarterly report"), "{text}");
        assert!(text.contains("Date: Wed, 26 Nov 2025 09:40:00"), "{text}");
    }

    #[tokio::test]
    async fn without_smtp_the_email_is_written_as_an_eml_file() {
        let dir = temp_dir();
        let invoice = invoice();
        let emailer = emailer(
            Mailer::File(dir.clone()),
            Directory {
                record: Some(record(&invoice)),
                invoice: Some(invoice.clone()),
            },
        );
        let detail = emailer
            .handle(job("invoice.issued", &invoice), &ctx())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(detail["recipient"], "o***@example.com");
        assert_eq!(detail["transport"], "file");
        let file = dir.join(detail["file"].as_str().unwrap());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains("Subject: Invoice issued: 12.50 EUR"),
            "{text}"
        );
        assert!(text.contains("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.invoice@keel.localhost"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_vanished_invoice_or_record_cancels_and_a_bad_event_is_poison() {
        let invoice = invoice();
        let no_invoice = emailer(
            Mailer::File(temp_dir()),
            Directory {
                invoice: None,
                record: None,
            },
        );
        let err = no_invoice
            .handle(job("invoice.paid", &invoice), &ctx())
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Cancel);
        let no_record = emailer(
            Mailer::File(temp_dir()),
            Directory {
                invoice: Some(invoice.clone()),
                record: None,
            },
        );
        let err = no_record
            .handle(job("invoice.paid", &invoice), &ctx())
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Cancel);
        let err = no_record
            .handle(job("record.created", &invoice), &ctx())
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Poison);
    }

    /// A minimal SMTP server on 127.0.0.1 that answers RCPT TO with `rcpt_reply` and keeps
    /// each message's DATA.
    async fn smtp_server(rcpt_reply: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = received.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                    let mut data: Option<String> = None;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(buffer) = data.as_mut() {
                            if line == "." {
                                kept.lock().unwrap().push(std::mem::take(buffer));
                                data = None;
                                write
                                    .write_all(b"250 2.0.0 Ok: queued as ABC123\r\n")
                                    .await
                                    .unwrap();
                            } else {
                                buffer.push_str(&line);
                                buffer.push('\n');
                            }
                            continue;
                        }
                        let upper = line.to_ascii_uppercase();
                        let reply: &str = if upper.starts_with("EHLO") {
                            "250-test\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("RCPT") {
                            rcpt_reply
                        } else if upper.starts_with("DATA") {
                            data = Some(String::new());
                            "354 go ahead\r\n"
                        } else if upper.starts_with("QUIT") {
                            write.write_all(b"221 bye\r\n").await.unwrap();
                            break;
                        } else {
                            "250 2.0.0 Ok\r\n"
                        };
                        write.write_all(reply.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (port, received)
    }

    fn smtp_mailer(port: u16) -> Mailer {
        Mailer::from_config(&NotificationsConfig {
            smtp_url: Some(format!("smtp://127.0.0.1:{port}")),
            ..NotificationsConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn smtp_delivery_records_the_masked_recipient_and_the_reply() {
        let (port, received) = smtp_server("250 2.1.5 Ok\r\n").await;
        let invoice = invoice();
        let emailer = emailer(
            smtp_mailer(port),
            Directory {
                record: Some(record(&invoice)),
                invoice: Some(invoice.clone()),
            },
        );
        let detail = emailer
            .handle(job("invoice.paid", &invoice), &ctx())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            detail,
            json!({"recipient": "o***@example.com", "smtp_reply": "250 2.0.0 Ok: queued as ABC123", "transport": "smtp"})
        );
        let received = received.lock().unwrap();
        assert!(received[0].contains("Subject: Invoice paid: 12.50 EUR"));
        assert!(received[0].contains("X-Correlation-ID: corr-1"));
    }

    #[tokio::test]
    async fn a_permanent_smtp_refusal_is_poison_and_a_transient_one_is_retried() {
        let invoice = invoice();
        let directory = || Directory {
            record: Some(record(&invoice)),
            invoice: Some(invoice.clone()),
        };
        let (port, _) =
            smtp_server("550 5.1.1 <owner@example.com>: Recipient address rejected\r\n").await;
        let err = emailer(smtp_mailer(port), directory())
            .handle(job("invoice.paid", &invoice), &ctx())
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Poison);
        assert!(!err.reason.contains("owner@"), "{}", err.reason);
        assert_eq!(err.detail.unwrap()["smtp_reply"], "550");

        let (port, _) = smtp_server("451 4.3.0 try again later\r\n").await;
        let err = emailer(smtp_mailer(port), directory())
            .handle(job("invoice.paid", &invoice), &ctx())
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Retry);
    }

    #[tokio::test]
    async fn an_unreachable_smtp_server_is_retried() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let invoice = invoice();
        let err = emailer(
            smtp_mailer(port),
            Directory {
                record: Some(record(&invoice)),
                invoice: Some(invoice.clone()),
            },
        )
        .handle(job("invoice.issued", &invoice), &ctx())
        .await
        .unwrap_err();
        assert_eq!(err.kind, FailureKind::Retry);
    }

    #[test]
    fn bad_smtp_urls_and_senders_fail_at_start() {
        let bad = NotificationsConfig {
            smtp_url: Some("http://mail.example.com".into()),
            ..NotificationsConfig::default()
        };
        assert!(matches!(
            Mailer::from_config(&bad),
            Err(NotificationsError::SmtpUrl(_))
        ));
        assert!(matches!(
            sender("not an address"),
            Err(NotificationsError::MailFrom(_))
        ));
    }
}
