//! Compares a committed JSON Schema with a regenerated one and classifies every difference
//! as breaking (stored events or consumers of that version would break) or compatible.
//!
//! Breaking: a field removed or renamed, retyped (type or `format`), made required, a new
//! required field, no longer nullable, an enum variant removed, a constraint changed, any
//! other change of shape. Compatible: a new optional field, a field made optional or
//! nullable, a new enum variant, documentation.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One difference between two versions of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The field it concerns (`a.b` for nested fields, `a[]` for array items); empty for the
    /// payload itself.
    pub field: String,
    /// What changed, as a sentence fragment.
    pub what: String,
    /// Whether existing payloads or consumers of this version would break.
    pub breaking: bool,
}

/// Keywords that describe rather than constrain.
const ANNOTATIONS: [&str; 9] = [
    "description",
    "title",
    "examples",
    "default",
    "$schema",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords [`compare`] looks at structurally; every other one is compared as a constraint.
const STRUCTURAL: [&str; 10] = [
    "type",
    "format",
    "properties",
    "required",
    "items",
    "enum",
    "oneOf",
    "anyOf",
    "$ref",
    "$defs",
];

/// Every difference between `old` (committed) and `new` (generated).
#[must_use]
pub fn compare(old: &Value, new: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    let cx = Cx { old, new };
    cx.schema("", old, new, &mut out);
    if out.is_empty() && old != new {
        out.push(Change {
            field: String::new(),
            what: "documentation changed".to_owned(),
            breaking: false,
        });
    }
    out
}

struct Cx<'a> {
    old: &'a Value,
    new: &'a Value,
}

/// Follows local `$ref`s (`#/$defs/X`, `#/definitions/X`) within `root`.
pub(crate) fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..32 {
        let Some(target) = schema.get("$ref").and_then(Value::as_str) else {
            break;
        };
        match target.strip_prefix('#').and_then(|p| root.pointer(p)) {
            Some(next) => schema = next,
            None => break,
        }
    }
    schema
}

/// A schema without its `null` alternative, and whether it had one.
pub(crate) fn non_null(root: &Value, schema: &Value) -> (Value, bool) {
    let schema = resolve(root, schema);
    if let Some(types) = schema.get("type").and_then(Value::as_array) {
        let rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if rest.len() < types.len() {
            let mut copy = schema.clone();
            copy["type"] = match rest.as_slice() {
                [one] => one.clone(),
                _ => Value::Array(rest),
            };
            return (copy, true);
        }
    }
    for keyword in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(keyword).and_then(Value::as_array) {
            let is_null = |o: &Value| o.get("type").is_some_and(|t| t == "null");
            let rest: Vec<&Value> = options.iter().filter(|o| !is_null(o)).collect();
            if rest.len() == 1 && options.len() == 2 {
                return (resolve(root, rest[0]).clone(), true);
            }
        }
    }
    (schema.clone(), false)
}

/// The string values of an enum schema (`enum`, or a `oneOf` of `const`/`enum` members).
pub(crate) fn enum_values(schema: &Value) -> Option<BTreeSet<String>> {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return Some(values.iter().map(text).collect());
    }
    let members = schema.get("oneOf").and_then(Value::as_array)?;
    let mut values = BTreeSet::new();
    for member in members {
        if let Some(c) = member.get("const") {
            values.insert(text(c));
        } else if let Some(list) = member.get("enum").and_then(Value::as_array) {
            values.extend(list.iter().map(text));
        } else {
            return None;
        }
    }
    Some(values)
}

/// A short name for a schema's type, e.g. `string (uuid)`, `integer (uint32)`, `object`.
#[must_use]
pub fn type_name(schema: &Value) -> String {
    if let Some(values) = enum_values(schema) {
        let list: Vec<String> = values.into_iter().collect();
        return format!("enum ({})", list.join(" | "));
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ if schema.get("properties").is_some() => "object".to_owned(),
        _ if schema.get("oneOf").is_some() || schema.get("anyOf").is_some() => {
            "one of several shapes".to_owned()
        }
        _ => "any JSON".to_owned(),
    };
    match schema.get("format").and_then(Value::as_str) {
        Some(format) => format!("{ty} ({format})"),
        None => ty,
    }
}

fn strip_annotations(root: &Value, schema: &Value) -> Value {
    match resolve(root, schema) {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !ANNOTATIONS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), strip_annotations(root, v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| strip_annotations(root, v)).collect())
        }
        other => other.clone(),
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl Cx<'_> {
    fn schema(&self, path: &str, old: &Value, new: &Value, out: &mut Vec<Change>) {
        let change = |what: String, breaking: bool| Change {
            field: path.to_owned(),
            what,
            breaking,
        };
        let (o, old_null) = non_null(self.old, old);
        let (n, new_null) = non_null(self.new, new);
        match (old_null, new_null) {
            (true, false) => out.push(change("no longer accepts null".to_owned(), true)),
            (false, true) => out.push(change("now accepts null".to_owned(), false)),
            _ => {}
        }

        if let (Some(ov), Some(nv)) = (enum_values(&o), enum_values(&n)) {
            for gone in ov.difference(&nv) {
                out.push(change(format!("lost enum variant `{gone}`"), true));
            }
            for added in nv.difference(&ov) {
                out.push(change(format!("gained enum variant `{added}`"), false));
            }
            return;
        }

        let (old_type, new_type) = (type_name(&o), type_name(&n));
        if old_type != new_type {
            out.push(change(
                format!("was retyped from {old_type} to {new_type}"),
                true,
            ));
            return;
        }

        if let (Some(op), Some(np)) = (
            o.get("properties").and_then(Value::as_object),
            n.get("properties").and_then(Value::as_object),
        ) {
            let (oreq, nreq) = (required(&o), required(&n));
            let added: Vec<&String> = np.keys().filter(|k| !op.contains_key(*k)).collect();
            for (name, old_field) in op {
                let field = join(path, name);
                let Some(new_field) = np.get(name) else {
                    let hint = if added.is_empty() {
                        String::new()
                    } else {
                        let list: Vec<String> = added.iter().map(|a| format!("`{a}`")).collect();
                        format!(" (new: {})", list.join(", "))
                    };
                    out.push(Change {
                        field,
                        what: format!("was removed or renamed{hint}"),
                        breaking: true,
                    });
                    continue;
                };
                match (oreq.contains(name), nreq.contains(name)) {
                    (false, true) => out.push(Change {
                        field: field.clone(),
                        what: "was made required (stored events without it stop decoding)"
                            .to_owned(),
                        breaking: true,
                    }),
                    (true, false) => out.push(Change {
                        field: field.clone(),
                        what: "was made optional".to_owned(),
                        breaking: false,
                    }),
                    _ => {}
                }
                self.schema(&field, old_field, new_field, out);
            }
            for name in added {
                let field = join(path, name);
                if nreq.contains(name) {
                    out.push(Change {
                        field,
                        what: "was added as a required field (stored events lack it)".to_owned(),
                        breaking: true,
                    });
                } else {
                    out.push(Change {
                        field,
                        what: "was added as an optional field".to_owned(),
                        breaking: false,
                    });
                }
            }
        }

        if let (Some(oi), Some(ni)) = (o.get("items"), n.get("items")) {
            self.schema(&format!("{path}[]"), oi, ni, out);
        }

        let keys: BTreeSet<&String> = o
            .as_object()
            .into_iter()
            .chain(n.as_object())
            .flat_map(Map::keys)
            .filter(|k| !ANNOTATIONS.contains(&k.as_str()) && !STRUCTURAL.contains(&k.as_str()))
            .collect();
        for key in keys {
            let (a, b) = (o.get(key.as_str()), n.get(key.as_str()));
            if key == "additionalProperties" {
                // Old stored payloads only hold the fields they were written with, so
                // (dis)allowing unknown fields changes nothing for them.
                if a.is_some_and(Value::is_object) || b.is_some_and(Value::is_object) {
                    let (a, b) = (
                        a.cloned().unwrap_or(Value::Bool(true)),
                        b.cloned().unwrap_or(Value::Bool(true)),
                    );
                    self.schema(&format!("{path}{{}}"), &a, &b, out);
                }
                continue;
            }
            if a.map(|v| strip_annotations(self.old, v))
                != b.map(|v| strip_annotations(self.new, v))
            {
                let show =
                    |v: Option<&Value>| v.map_or_else(|| "nothing".to_owned(), Value::to_string);
                out.push(change(
                    format!("constraint `{key}` changed from {} to {}", show(a), show(b)),
                    true,
                ));
            }
        }

        let shaped = |s: &Value| s.get("oneOf").is_some() || s.get("anyOf").is_some();
        if (shaped(&o) || shaped(&n))
            && strip_annotations(self.old, &o) != strip_annotations(self.new, &n)
        {
            out.push(change(
                "changed shape (its oneOf/anyOf alternatives)".to_owned(),
                true,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nullable_forms_are_unwrapped() {
        let root = json!({"$defs": {"X": {"type": "object", "properties": {}}}});
        let (s, null) = non_null(
            &root,
            &json!({"type": ["string", "null"], "format": "uuid"}),
        );
        assert!(null);
        assert_eq!(type_name(&s), "string (uuid)");
        let (s, null) = non_null(
            &root,
            &json!({"anyOf": [{"$ref": "#/$defs/X"}, {"type": "null"}]}),
        );
        assert!(null);
        assert_eq!(type_name(&s), "object");
    }

    #[test]
    fn enum_forms_are_read() {
        let plain = json!({"type": "string", "enum": ["a", "b"]});
        let documented = json!({"oneOf": [{"const": "a", "description": "A"}, {"type": "string", "enum": ["b"]}]});
        assert_eq!(enum_values(&plain), enum_values(&documented));
        assert_eq!(type_name(&plain), "enum (a | b)");
    }
}
