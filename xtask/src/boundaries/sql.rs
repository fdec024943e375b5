//! Finds the table names SQL text reads or writes, with their byte offsets.
//!
//! Not a SQL parser: a small tokenizer (words, quoted identifiers, punctuation; comments and
//! `'…'` values skipped) and the handful of places a table name can stand — after `FROM`,
//! `JOIN`, `INTO`, `UPDATE`, `TABLE`, `TRUNCATE`, `REFERENCES`, `USING`, comma lists after
//! `FROM`, and `ON <table> (` of an index or trigger. Only names that carry some module's
//! prefix matter to the lint, so a generous reading costs nothing on ordinary strings.

/// A table name found in SQL: its byte offset in the text and the name (unquoted, without
/// schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// Byte offset of the name in the scanned text.
    pub offset: usize,
    /// The bare table name.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Quoted(&'a str),
    Punct(char),
}

fn tokenize(text: &str) -> Vec<(usize, Tok<'_>)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if text[i..].starts_with("--") {
            i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
        } else if text[i..].starts_with("/*") {
            i = text[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |n| i + 2 + n + 2);
        } else if b == b'\'' {
            // A value, not a name: skip it ('' is an escaped quote and re-enters here).
            i = text[i + 1..]
                .find('\'')
                .map_or(bytes.len(), |n| i + 1 + n + 1);
        } else if let Some(close) = match b {
            b'"' => Some('"'),
            b'`' => Some('`'),
            b'[' => Some(']'),
            _ => None,
        } {
            let end = text[i + 1..].find(close).map_or(bytes.len(), |n| i + 1 + n);
            out.push((i + 1, Tok::Quoted(&text[i + 1..end])));
            i = (end + 1).min(bytes.len());
        } else if b.is_ascii_alphabetic() || b == b'_' {
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                .map_or(bytes.len(), |n| i + n);
            out.push((i, Tok::Word(&text[i..end])));
            i = end;
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            out.push((i, Tok::Punct(c)));
            i += c.len_utf8();
        }
    }
    out
}

fn is_kw(tok: Option<&(usize, Tok<'_>)>, kw: &str) -> bool {
    matches!(tok, Some((_, Tok::Word(w))) if w.eq_ignore_ascii_case(kw))
}

/// Words that end a table list or follow a table without being an alias.
const CLAUSE_WORDS: &[&str] = &[
    "where",
    "join",
    "inner",
    "left",
    "right",
    "full",
    "cross",
    "natural",
    "on",
    "using",
    "group",
    "order",
    "limit",
    "offset",
    "set",
    "values",
    "returning",
    "select",
    "union",
    "except",
    "intersect",
    "for",
    "having",
    "window",
    "default",
    "as",
    "when",
    "begin",
    "do",
    "lateral",
    "only",
];

/// Reads `schema.table` or `"table"` at `i`; returns the last component and the index after it.
fn qualified_name<'a>(toks: &[(usize, Tok<'a>)], mut i: usize) -> Option<(usize, &'a str, usize)> {
    loop {
        let &(offset, Tok::Word(name) | Tok::Quoted(name)) = toks.get(i)? else {
            return None;
        };
        i += 1;
        if matches!(toks.get(i), Some((_, Tok::Punct('.')))) {
            i += 1;
        } else {
            return Some((offset, name, i));
        }
    }
}

/// Every table name `sql` names, in order.
#[must_use]
pub fn table_refs(sql: &str) -> Vec<TableRef> {
    let toks = tokenize(sql);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let Tok::Word(word) = toks[i].1 else {
            i += 1;
            continue;
        };
        let kw = word.to_ascii_lowercase();
        let list = matches!(kw.as_str(), "from" | "using" | "truncate" | "table");
        let starts_name = list
            || matches!(
                kw.as_str(),
                "join" | "into" | "update" | "references" | "on"
            );
        i += 1;
        if !starts_name {
            continue;
        }
        // Modifiers that may stand between the keyword and the name.
        loop {
            if is_kw(toks.get(i), "if")
                && is_kw(toks.get(i + 1), "not")
                && is_kw(toks.get(i + 2), "exists")
            {
                i += 3;
            } else if is_kw(toks.get(i), "if") && is_kw(toks.get(i + 1), "exists") {
                i += 2;
            } else if is_kw(toks.get(i), "only")
                || is_kw(toks.get(i), "lateral")
                || (kw == "truncate" && is_kw(toks.get(i), "table"))
            {
                i += 1;
            } else {
                break;
            }
        }
        while let Some((offset, name, next)) = qualified_name(&toks, i) {
            if kw == "on" {
                // `ON t (cols)` of an index, `ON t FOR EACH ROW` of a trigger; not a join condition.
                let follows = toks.get(next);
                let is_table = matches!(follows, Some((_, Tok::Punct('('))))
                    || ["using", "for", "begin", "when"]
                        .iter()
                        .any(|k| is_kw(follows, k));
                if is_table {
                    out.push(TableRef {
                        offset,
                        name: name.to_owned(),
                    });
                }
                break;
            }
            if CLAUSE_WORDS.iter().any(|c| name.eq_ignore_ascii_case(c)) {
                break;
            }
            out.push(TableRef {
                offset,
                name: name.to_owned(),
            });
            i = next;
            if !list {
                break;
            }
            // Skip an alias (`AS x` or a bare word that is not a clause word), then a comma continues the list.
            if is_kw(toks.get(i), "as") {
                i += 2;
            } else if let Some((_, Tok::Word(w))) = toks.get(i)
                && !CLAUSE_WORDS.iter().any(|c| w.eq_ignore_ascii_case(c))
            {
                i += 1;
            }
            if matches!(toks.get(i), Some((_, Tok::Punct(',')))) {
                i += 1;
            } else {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<String> {
        table_refs(sql).into_iter().map(|t| t.name).collect()
    }

    #[test]
    fn finds_tables_in_each_statement_kind() {
        assert_eq!(
            names(
                "SELECT r.title FROM records_records r JOIN billing_invoices b ON b.record_id = r.id"
            ),
            ["records_records", "billing_invoices"]
        );
        assert_eq!(
            names("insert into \"records_records\" (id) values ($1)"),
            ["records_records"]
        );
        assert_eq!(
            names("UPDATE public.billing_invoices SET status = 'from x'"),
            ["billing_invoices"]
        );
        assert_eq!(names("DELETE FROM a, b AS c, d WHERE 1"), ["a", "b", "d"]);
        assert_eq!(
            names(
                "CREATE TABLE IF NOT EXISTS billing_invoices (record_id TEXT REFERENCES records_records(id))"
            ),
            ["billing_invoices", "records_records"]
        );
        assert_eq!(
            names("CREATE INDEX i ON records_records (owner)"),
            ["records_records"]
        );
        assert_eq!(
            names("TRUNCATE TABLE keel_jobs, keel_outbox"),
            ["keel_jobs", "keel_outbox"]
        );
    }

    #[test]
    fn values_and_comments_are_not_tables() {
        assert!(
            names("SELECT 'from records_records' -- from records_x\n /* join records_y */")
                .is_empty()
        );
    }

    #[test]
    fn offsets_point_at_the_name() {
        let sql = "SELECT * FROM  records_records";
        assert_eq!(table_refs(sql).first().map(|t| t.offset), Some(15));
    }
}
