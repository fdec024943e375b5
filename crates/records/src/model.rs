//! Records and imports as values: validated newtypes, so an invalid title, owner email or
//! attribute map never exists past the edge.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Longest title, in characters after trimming.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest owner email, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Largest attribute map, serialized as compact JSON.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

/// Why a record's fields are not acceptable. Messages never echo the values themselves, so
/// they are safe in import failure rows and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    /// The title is empty after trimming, longer than [`MAX_TITLE_CHARS`], or holds a
    /// control character.
    #[error(
        "invalid title: must be 1 to {MAX_TITLE_CHARS} characters after trimming, without control characters"
    )]
    Title,
    /// The owner email is not a plausible address.
    #[error(
        "invalid owner_email: must be a valid email address of at most {MAX_EMAIL_LEN} characters"
    )]
    OwnerEmail,
    /// The attributes are not a JSON object, or are too large.
    #[error("invalid attributes: {0}")]
    Attributes(&'static str),
}

/// A record title: trimmed, 1–200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    /// Trims `raw` and accepts it when 1–200 characters remain.
    ///
    /// # Errors
    /// [`InvalidRecord::Title`] otherwise.
    pub fn parse(raw: &str) -> Result<Self, InvalidRecord> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        // Control characters (NUL among them, which PostgreSQL text cannot hold) have no
        // place in a one-line title.
        if chars == 0 || chars > MAX_TITLE_CHARS || trimmed.chars().any(char::is_control) {
            return Err(InvalidRecord::Title);
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// Wraps a title read back from storage, where it was validated on the way in.
    pub(crate) fn from_stored(text: String) -> Self {
        Self(text)
    }

    /// The title as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a record's notifications go: a plausible `local@domain.tld` address.
///
/// The check is deliberately conservative (RFC 5322 dot-atom local part, LDH domain labels
/// with a dot); it decides plausibility, not deliverability.
#[derive(Clone, PartialEq, Eq)]
pub struct OwnerEmail(String);

impl OwnerEmail {
    /// Trims `raw` and accepts it when it looks like a deliverable address.
    ///
    /// # Errors
    /// [`InvalidRecord::OwnerEmail`] otherwise.
    pub fn parse(raw: &str) -> Result<Self, InvalidRecord> {
        let address = raw.trim();
        if address.len() > MAX_EMAIL_LEN {
            return Err(InvalidRecord::OwnerEmail);
        }
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Err(InvalidRecord::OwnerEmail);
        };
        if is_local_part(local) && is_domain(domain) {
            Ok(Self(address.to_owned()))
        } else {
            Err(InvalidRecord::OwnerEmail)
        }
    }

    /// Wraps an address read back from storage, where it was validated on the way in.
    pub(crate) fn from_stored(text: String) -> Self {
        Self(text)
    }

    /// The address as text. Personal data: do not log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OwnerEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Personal data stays out of debug output and therefore out of logs.
        f.write_str("OwnerEmail(***)")
    }
}

fn is_local_part(local: &str) -> bool {
    const SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";
    !local.is_empty()
        && local.len() <= 64
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || SPECIALS.contains(&b))
        })
}

fn is_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let Some(tld) = labels.last() else {
        return false;
    };
    domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| is_label(label))
        && !tld.bytes().all(|b| b.is_ascii_digit())
}

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Free-form record attributes: a JSON object of at most 16 KiB serialized.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attributes(Map<String, Value>);

impl Attributes {
    /// Accepts an object (or `None`/`null`, meaning `{}`) that serializes within the limit.
    ///
    /// # Errors
    /// [`InvalidRecord::Attributes`] for any other JSON value or an oversized object.
    pub fn parse(raw: Option<Value>) -> Result<Self, InvalidRecord> {
        let map = match raw {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(InvalidRecord::Attributes("must be a JSON object")),
        };
        let size = serde_json::to_vec(&map)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_ATTRIBUTES_BYTES {
            return Err(InvalidRecord::Attributes(
                "must be at most 16 KiB when serialized",
            ));
        }
        Ok(Self(map))
    }

    /// Reads attributes back from storage, where they were validated on the way in.
    pub(crate) fn from_stored(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text).map(Self)
    }

    /// The attributes as compact JSON text, for storage.
    pub(crate) fn to_json_text(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }

    /// The attributes as a JSON map.
    #[cfg(test)]
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// The body of `POST /records`, and the shape of one NDJSON import line.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRecordRequest {
    /// The title: 1 to 200 characters after trimming, no control characters.
    #[schema(example = "Quarterly report")]
    pub title: String,
    /// The owner's email address.
    #[schema(example = "owner@example.com")]
    pub owner_email: String,
    /// Optional object of free-form attributes, at most 16 KiB as compact JSON; absent or
    /// `null` means `{}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

/// A record that passed validation and is ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    /// Its title.
    pub title: Title,
    /// Its owner.
    pub owner_email: OwnerEmail,
    /// Its attributes.
    pub attributes: Attributes,
}

impl NewRecord {
    /// Validates every field of a request, reporting the first problem found.
    ///
    /// # Errors
    /// The [`InvalidRecord`] of the first invalid field (title, then email, then attributes).
    pub fn parse(request: CreateRecordRequest) -> Result<Self, InvalidRecord> {
        Ok(Self {
            title: Title::parse(&request.title)?,
            owner_email: OwnerEmail::parse(&request.owner_email)?,
            attributes: Attributes::parse(request.attributes)?,
        })
    }

    /// Parses and validates one NDJSON import line.
    ///
    /// The error text is stored as the line's failure reason: it names what was wrong and
    /// never echoes the line's content (which may hold an email address).
    ///
    /// # Errors
    /// A human-readable reason the line cannot become a record.
    pub fn parse_line(line: &str) -> Result<Self, String> {
        const FIELDS: [&str; 3] = ["title", "owner_email", "attributes"];
        let value: Value = serde_json::from_str(line)
            .map_err(|e| format!("malformed JSON at column {}", e.column()))?;
        let Value::Object(mut object) = value else {
            return Err("line is not a JSON object".to_owned());
        };
        if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(unknown_field_message(unknown));
        }
        let title = take_string(&mut object, "title")?;
        let owner_email = take_string(&mut object, "owner_email")?;
        let request = CreateRecordRequest {
            title,
            owner_email,
            attributes: object.remove("attributes"),
        };
        Self::parse(request).map_err(|e| e.to_string())
    }
}

fn take_string(object: &mut Map<String, Value>, field: &str) -> Result<String, String> {
    match object.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("invalid {field}: must be a string")),
        None => Err(format!("missing field `{field}`")),
    }
}

fn unknown_field_message(name: &str) -> String {
    let printable = name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if printable {
        format!("unknown field `{name}`; expected title, owner_email, attributes")
    } else {
        "unknown field; expected title, owner_email, attributes".to_owned()
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// UUIDv7: ids sort in creation order.
    pub id: Uuid,
    /// Its title.
    pub title: Title,
    /// Its owner.
    pub owner_email: OwnerEmail,
    /// Its attributes.
    pub attributes: Attributes,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// The JSON shape of a record in responses.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Record)]
pub struct RecordView {
    /// The record's id (UUIDv7).
    id: Uuid,
    /// Its title, trimmed.
    title: String,
    /// Its owner's email address.
    owner_email: String,
    /// Its free-form attributes.
    #[schema(value_type = Object)]
    attributes: Map<String, Value>,
    /// When it was created (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime<Utc>,
}

/// A page of records, oldest first: the answer of `GET /records`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordPage {
    /// The records of this page.
    pub items: Vec<RecordView>,
    /// The `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl From<Record> for RecordView {
    fn from(record: Record) -> Self {
        Self {
            id: record.id,
            title: record.title.0,
            owner_email: record.owner_email.0,
            attributes: record.attributes.0,
            created_at: record.created_at,
        }
    }
}

fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Where an import stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Uploaded; its job has not started yet.
    Queued,
    /// Its job is creating records.
    Running,
    /// Every line was handled.
    Completed,
    /// Its job ran out of attempts; a replay resumes it.
    Failed,
}

impl ImportStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Reads the stored text back.
    pub fn from_stored(text: &str) -> Option<Self> {
        match text {
            "queued" => Some(Self::Queued),
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// An import's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The import's id.
    pub id: Uuid,
    /// Where it stands.
    pub status: ImportStatus,
    /// Non-empty lines in the uploaded file.
    pub total: i64,
    /// Lines handled so far, failed ones included.
    pub processed: i64,
    /// Lines that failed so far.
    pub failed: i64,
    /// The last line number handled; the job resumes after it.
    pub checkpoint: i64,
}

/// One non-blank line of an uploaded file, as kept for the import job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportLine {
    /// Its number in the file, counting from 1 over all lines (blank ones included).
    pub line_no: i64,
    /// Its text, or why it was refused on upload.
    pub content: LineContent,
}

/// What an uploaded line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineContent {
    /// The line's text, to be parsed by the import job.
    Text(String),
    /// The line could not be kept (too long, not UTF-8): it fails with this reason.
    Rejected(String),
}

/// One line of an import that did not become a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FailedRow {
    /// Its line number in the file, counting from 1 over all lines.
    pub line: i64,
    /// What was wrong with it.
    pub error: String,
}

/// The answer of `POST /imports`: the import was stored and its job queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportAccepted {
    /// The import's id, for `GET /imports/{id}`.
    pub id: Uuid,
    /// Always `queued`.
    pub status: ImportStatus,
}

/// The answer of `GET /imports/{id}`: an import's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportView {
    /// The import's id.
    pub id: Uuid,
    /// Where it stands.
    pub status: ImportStatus,
    /// Non-empty lines in the uploaded file.
    pub total: i64,
    /// Lines handled so far, failed ones included.
    pub processed: i64,
    /// Lines that failed so far.
    pub failed: i64,
    /// The first failed lines (at most 1000), by line number.
    pub failed_rows: Vec<FailedRow>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn title_is_trimmed_and_bounded() {
        assert_eq!(Title::parse("  Hello ").unwrap().as_str(), "Hello");
        assert_eq!(Title::parse("   "), Err(InvalidRecord::Title));
        assert_eq!(Title::parse(""), Err(InvalidRecord::Title));
        assert!(Title::parse(&"é".repeat(200)).is_ok());
        assert_eq!(Title::parse(&"x".repeat(201)), Err(InvalidRecord::Title));
        assert_eq!(Title::parse("a\u{0}b"), Err(InvalidRecord::Title));
        assert_eq!(Title::parse("two\nlines"), Err(InvalidRecord::Title));
    }

    #[test]
    fn plausible_emails_are_accepted() {
        for ok in [
            "owner@example.com",
            "first.last+tag@sub.example.co.uk",
            "o'brien@example.org",
            "x@a-b.io",
            " padded@example.com ",
        ] {
            assert!(OwnerEmail::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn implausible_emails_are_refused() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let too_long = format!("a@{}.com", "b".repeat(250));
        for bad in [
            "",
            "plainaddress",
            "@example.com",
            "owner@",
            "owner@localhost",
            "owner@example..com",
            "owner@-example.com",
            "owner@example-.com",
            ".owner@example.com",
            "own..er@example.com",
            "owner.@example.com",
            "own er@example.com",
            "owner@exa mple.com",
            "owner@@example.com",
            "owner@example.123",
            "\"quoted\"@example.com",
            long_local.as_str(),
            too_long.as_str(),
        ] {
            assert_eq!(
                OwnerEmail::parse(bad),
                Err(InvalidRecord::OwnerEmail),
                "{bad}"
            );
        }
    }

    #[test]
    fn email_debug_output_hides_the_address() {
        let email = OwnerEmail::parse("owner@example.com").unwrap();
        assert!(!format!("{email:?}").contains("owner"));
    }

    #[test]
    fn attributes_must_be_a_small_object() {
        assert_eq!(Attributes::parse(None).unwrap(), Attributes::default());
        assert_eq!(
            Attributes::parse(Some(Value::Null)).unwrap(),
            Attributes::default()
        );
        assert!(Attributes::parse(Some(json!({"a": 1}))).is_ok());
        assert!(matches!(
            Attributes::parse(Some(json!([1]))),
            Err(InvalidRecord::Attributes(_))
        ));
        assert!(matches!(
            Attributes::parse(Some(json!("x"))),
            Err(InvalidRecord::Attributes(_))
        ));
        let big = json!({ "k": "v".repeat(MAX_ATTRIBUTES_BYTES) });
        assert!(matches!(
            Attributes::parse(Some(big)),
            Err(InvalidRecord::Attributes(_))
        ));
    }

    #[test]
    fn an_import_line_parses_like_a_request() {
        let record = NewRecord::parse_line(
            r#"{"title":" T ","owner_email":"o@example.com","attributes":{"k":1}}"#,
        )
        .unwrap();
        assert_eq!(record.title.as_str(), "T");
        assert_eq!(record.attributes.as_map()["k"], json!(1));
    }

    #[test]
    fn import_line_errors_say_what_is_wrong_without_echoing_the_email() {
        let cases = [
            (
                r#"{"title":"T","owner_email":"nope@"}"#,
                "invalid owner_email",
            ),
            (
                r#"{"title":"","owner_email":"o@example.com"}"#,
                "invalid title",
            ),
            (
                r#"{"owner_email":"o@example.com"}"#,
                "missing field `title`",
            ),
            (
                r#"{"title":1,"owner_email":"o@example.com"}"#,
                "invalid title: must be a string",
            ),
            (
                r#"{"title":"T","owner_email":"o@example.com","x":1}"#,
                "unknown field `x`",
            ),
            (
                r#"{"title":"T","owner_email":"o@example.com","o@example.com":1}"#,
                "unknown field;",
            ),
            (r#""o@example.com""#, "line is not a JSON object"),
            (r#"{"title":"T","#, "malformed JSON"),
            (
                r#"{"title":"T","owner_email":"o@example.com","attributes":[]}"#,
                "invalid attributes",
            ),
        ];
        for (line, expected) in cases {
            let error = NewRecord::parse_line(line).unwrap_err();
            assert!(error.starts_with(expected), "{line}: {error}");
            assert!(!error.contains("example.com"), "{line}: {error}");
            assert!(!error.contains("nope"), "{line}: {error}");
        }
    }

    #[test]
    fn import_status_round_trips_through_storage() {
        for status in [
            ImportStatus::Queued,
            ImportStatus::Running,
            ImportStatus::Completed,
            ImportStatus::Failed,
        ] {
            assert_eq!(ImportStatus::from_stored(status.as_str()), Some(status));
        }
        assert_eq!(ImportStatus::from_stored("other"), None);
    }
}
