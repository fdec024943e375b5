//! The payload-discipline lint: an event carries ids, enums, timestamps, amounts and small
//! scalars — never personal data or a snapshot of another aggregate — so the outbox, dead
//! letters and logs hold no PII by construction.
//!
//! A field fails when its name looks like personal data (email, name, phone, address, …),
//! when it is free text (a string with no `format`, enum, `pattern` or `maxLength` ≤ 64),
//! or when it is a nested object or untyped JSON (a snapshot). A type marked as event-carried
//! state transfer (`const STATE_TRANSFER: Option<&str> = Some("why")` on its `Event` impl) is
//! exempt; the reason is shown in `docs/events.md`.

use serde_json::Value;

use super::diff::{enum_values, non_null, type_name};

/// Field-name words that mean personal data, and what they are.
const PERSONAL: [(&str, &str); 17] = [
    ("email", "an email address"),
    ("mail", "an email address"),
    ("name", "a name"),
    ("firstname", "a name"),
    ("lastname", "a name"),
    ("fullname", "a name"),
    ("surname", "a name"),
    ("phone", "a phone number"),
    ("mobile", "a phone number"),
    ("telephone", "a phone number"),
    ("address", "an address"),
    ("street", "an address"),
    ("city", "an address"),
    ("zip", "an address"),
    ("postcode", "an address"),
    ("birthdate", "a date of birth"),
    ("ssn", "a national id"),
];

/// Formats that make a string an id or a timestamp.
const SCALAR_FORMATS: [&str; 6] = [
    "uuid",
    "date-time",
    "date",
    "time",
    "duration",
    "uri-reference",
];

/// The longest `maxLength` a string may declare and still count as a small scalar (a code).
pub const SMALL_STRING: u64 = 64;

/// One field that breaks the discipline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field.
    pub field: String,
    /// Why it fails.
    pub why: String,
}

fn words(field: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in field.chars() {
        if c == '_' || c == '-' || c == '.' {
            out.push(std::mem::take(&mut current));
        } else if c.is_uppercase() && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            current.extend(c.to_lowercase());
        } else {
            current.extend(c.to_lowercase());
        }
    }
    out.push(current);
    out.retain(|w| !w.is_empty());
    out
}

/// Every field of `schema` (the payload's JSON Schema) that breaks the discipline.
#[must_use]
pub fn lint(schema: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let (payload, _) = non_null(schema, schema);
    let Some(properties) = payload.get("properties").and_then(Value::as_object) else {
        return out;
    };
    for (field, sub) in properties {
        if let Some((word, what)) = words(field)
            .iter()
            .find_map(|w| PERSONAL.iter().find(|(p, _)| p == w))
        {
            out.push(Violation {
                field: field.clone(),
                why: format!("looks like personal data ({what}: the word `{word}`)"),
            });
            continue;
        }
        if let Some(why) = not_small(schema, sub) {
            out.push(Violation {
                field: field.clone(),
                why,
            });
        }
    }
    out
}

/// Why a field's schema is not an id, enum, timestamp, amount or small scalar.
fn not_small(root: &Value, schema: &Value) -> Option<String> {
    let (s, _) = non_null(root, schema);
    if enum_values(&s).is_some() {
        return None;
    }
    match s.get("type").and_then(Value::as_str) {
        Some("integer" | "number" | "boolean") => None,
        Some("string") => {
            let format = s.get("format").and_then(Value::as_str);
            let small = s
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|n| n <= SMALL_STRING);
            if format.is_some_and(|f| SCALAR_FORMATS.contains(&f))
                || small
                || s.get("pattern").is_some()
            {
                None
            } else {
                Some(format!(
                    "is free text (a string with no id/timestamp format, enum, pattern or maxLength ≤ {SMALL_STRING})"
                ))
            }
        }
        Some("array") => match s.get("items") {
            Some(items) => not_small(root, items).map(|why| format!("holds items that {why}")),
            None => Some("is an array of untyped JSON (a snapshot)".to_owned()),
        },
        Some("object") => Some("is a nested snapshot (an object); carry its id instead".to_owned()),
        _ => Some(format!(
            "is a nested snapshot ({}); carry ids and small scalars instead",
            type_name(&s)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_split_into_words() {
        assert_eq!(words("owner_email"), ["owner", "email"]);
        assert_eq!(words("ownerEmail"), ["owner", "email"]);
        assert_eq!(words("record_id"), ["record", "id"]);
    }
}
