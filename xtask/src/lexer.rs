//! Rust source as a flat list of tokens with `line:col` positions.
//!
//! The checks need to tell code from comments and string literals exactly (a `use billing`
//! inside a doc comment is not an import; `dbg!(` inside a string is not a macro call), so
//! they share one real lexer — `proc-macro2`'s — rather than each guessing with text search.
//! Flattening the token trees makes "an `extern` followed by `crate` followed by a name"
//! a plain slice pattern.

use std::str::FromStr;

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An identifier or keyword (raw identifiers keep their `r#`).
    Ident(String),
    /// One punctuation character; `::` is two `:` tokens, the first one `joint`.
    Punct(char),
    /// A literal exactly as written in the source, quotes and prefixes included.
    Literal(String),
    /// The opening delimiter of a group.
    Open(Delimiter),
    /// The closing delimiter of a group.
    Close(Delimiter),
}

/// One token and where it starts (both 1-based; the column counts characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: Kind,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// For punctuation: glued to the next punctuation character (`:` of `::`).
    pub joint: bool,
}

impl Token {
    /// Whether this is the identifier `name`.
    #[must_use]
    pub fn is_ident(&self, name: &str) -> bool {
        matches!(&self.kind, Kind::Ident(i) if i == name)
    }

    /// Whether this is the punctuation `c`.
    #[must_use]
    pub fn is_punct(&self, c: char) -> bool {
        self.kind == Kind::Punct(c)
    }

    /// The identifier's text, without a raw `r#` prefix.
    #[must_use]
    pub fn ident(&self) -> Option<&str> {
        match &self.kind {
            Kind::Ident(i) => Some(i.strip_prefix("r#").unwrap_or(i)),
            _ => None,
        }
    }
}

/// The file could not be lexed as Rust (unbalanced delimiters, an unterminated string…).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{line}:{col}: not valid Rust tokens: {message}")]
pub struct LexError {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub col: usize,
    /// What the lexer said.
    pub message: String,
}

/// Lexes `source` into a flat token list.
///
/// Doc comments (`///`, `//!`, and `#[doc = "…"]` with a plain literal) are dropped: they are
/// prose, not code, for every check here.
///
/// # Errors
/// When the text is not a valid Rust token stream.
pub fn tokenize(source: &str) -> Result<Vec<Token>, LexError> {
    // A shebang line is not Rust; blank it so lines keep their numbers.
    let body;
    let source = if source.starts_with("#!") && !source.starts_with("#![") {
        let end = source.find('\n').unwrap_or(source.len());
        body = format!("{}{}", " ".repeat(end), &source[end..]);
        body.as_str()
    } else {
        source
    };
    let stream = TokenStream::from_str(source).map_err(|e| {
        let start = e.span().start();
        LexError {
            line: start.line,
            col: start.column + 1,
            message: e.to_string(),
        }
    })?;
    let mut out = Vec::new();
    flatten(stream, &mut out);
    Ok(strip_doc_attributes(out))
}

fn flatten(stream: TokenStream, out: &mut Vec<Token>) {
    for tree in stream {
        let start = tree.span().start();
        let (line, col) = (start.line, start.column + 1);
        match tree {
            TokenTree::Ident(i) => {
                out.push(Token {
                    kind: Kind::Ident(i.to_string()),
                    line,
                    col,
                    joint: false,
                });
            }
            TokenTree::Punct(p) => out.push(Token {
                kind: Kind::Punct(p.as_char()),
                line,
                col,
                joint: p.spacing() == Spacing::Joint,
            }),
            TokenTree::Literal(l) => {
                out.push(Token {
                    kind: Kind::Literal(l.to_string()),
                    line,
                    col,
                    joint: false,
                });
            }
            TokenTree::Group(g) => {
                let delimiter = g.delimiter();
                let open = g.span_open().start();
                out.push(Token {
                    kind: Kind::Open(delimiter),
                    line: open.line,
                    col: open.column + 1,
                    joint: false,
                });
                flatten(g.stream(), out);
                let close = g.span_close().start();
                out.push(Token {
                    kind: Kind::Close(delimiter),
                    line: close.line,
                    col: close.column + 1,
                    joint: false,
                });
            }
        }
    }
}

/// Removes `#[doc = "literal"]` and `#![doc = "literal"]`, which is what doc comments lex to.
fn strip_doc_attributes(tokens: Vec<Token>) -> Vec<Token> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let bang = usize::from(tokens.get(i + 1).is_some_and(|t| t.is_punct('!')));
        let is_doc = tokens[i].is_punct('#')
            && matches!(tokens.get(i + 1 + bang), Some(t) if t.kind == Kind::Open(Delimiter::Bracket))
            && tokens.get(i + 2 + bang).is_some_and(|t| t.is_ident("doc"))
            && tokens.get(i + 3 + bang).is_some_and(|t| t.is_punct('='))
            && matches!(
                tokens.get(i + 4 + bang),
                Some(Token {
                    kind: Kind::Literal(_),
                    ..
                })
            )
            && matches!(tokens.get(i + 5 + bang), Some(t) if t.kind == Kind::Close(Delimiter::Bracket));
        if is_doc {
            i += 6 + bang;
        } else {
            out.push(tokens[i].clone());
            i += 1;
        }
    }
    out
}

/// A string literal's text as written, with where its contents start inside the literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrLiteral<'a> {
    /// The contents with every escape sequence blanked to spaces, so byte offsets (and so
    /// lines and columns) still match the source while `\n` no longer glues words together.
    pub masked: String,
    /// The contents with escapes resolved — the value the program sees (best effort for `\x`
    /// and `\u{…}`, which checks here never need).
    pub value: String,
    /// The literal as written.
    pub repr: &'a str,
    /// Byte offset of the contents within `repr`.
    pub content_start: usize,
}

/// Reads a string literal (`"…"`, `r#"…"#`, `b"…"`, `br"…"`, `c"…"`); `None` for other literals.
#[must_use]
pub fn string_literal(repr: &str) -> Option<StrLiteral<'_>> {
    let after_prefix = repr.trim_start_matches(['b', 'c']);
    let prefix_len = repr.len() - after_prefix.len();
    if prefix_len > 1 {
        return None;
    }
    if let Some(raw) = after_prefix.strip_prefix('r') {
        let hashes = raw.len() - raw.trim_start_matches('#').len();
        let content_start = prefix_len + 1 + hashes + 1;
        let content_end = repr.len().checked_sub(1 + hashes)?;
        if !raw[hashes..].starts_with('"') || content_end < content_start {
            return None;
        }
        let content = &repr[content_start..content_end];
        return Some(StrLiteral {
            masked: content.to_owned(),
            value: content.to_owned(),
            repr,
            content_start,
        });
    }
    if !after_prefix.starts_with('"') || repr.len() < prefix_len + 2 {
        return None;
    }
    let content_start = prefix_len + 1;
    let content = &repr[content_start..repr.len() - 1];
    let (masked, value) = unescape(content);
    Some(StrLiteral {
        masked,
        value,
        repr,
        content_start,
    })
}

fn unescape(content: &str) -> (String, String) {
    let mut masked = String::with_capacity(content.len());
    let mut value = String::with_capacity(content.len());
    let mut chars = content.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '\\' {
            masked.push(c);
            value.push(c);
            continue;
        }
        masked.push(' ');
        let Some((_, e)) = chars.next() else { break };
        match e {
            'n' => value.push('\n'),
            't' => value.push('\t'),
            'r' => value.push('\r'),
            '0' => value.push('\0'),
            '\n' => {
                // Line continuation: the newline and the next line's leading whitespace vanish.
                masked.push('\n');
                while let Some(&(_, w)) = chars.peek() {
                    if !w.is_whitespace() {
                        break;
                    }
                    masked.push(if w == '\n' { '\n' } else { ' ' });
                    chars.next();
                }
                continue;
            }
            'x' => {
                masked.push(' ');
                let hex: String = (0..2)
                    .filter_map(|_| chars.next().map(|(_, h)| h))
                    .collect();
                masked.push_str(&" ".repeat(hex.len()));
                if let Some(ch) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    value.push(ch);
                }
                continue;
            }
            'u' => {
                masked.push(' ');
                let mut hex = String::new();
                for (_, h) in chars.by_ref() {
                    masked.push(' ');
                    if h == '}' {
                        break;
                    }
                    if h != '{' {
                        hex.push(h);
                    }
                }
                if let Some(ch) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    value.push(ch);
                }
                continue;
            }
            other => value.push(other),
        }
        masked.push(' ');
    }
    (masked, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_strings_are_not_code() {
        let tokens = tokenize("// use billing;\n/* use billing; */ let s = \"use billing\";")
            .unwrap_or_default();
        assert!(!tokens.iter().any(|t| t.is_ident("billing")));
        assert!(tokens.iter().any(|t| t.is_ident("let")));
    }

    #[test]
    fn doc_comments_are_dropped_and_lines_kept() {
        let tokens = tokenize("//! about\n/// item\nfn f() {}\n").unwrap_or_default();
        assert_eq!(
            tokens.first().map(|t| (t.is_ident("fn"), t.line, t.col)),
            Some((true, 3, 1))
        );
    }

    #[test]
    fn string_literals_are_unescaped_and_masked_in_place() {
        let lit = string_literal(r#""a\nFROM b""#);
        assert_eq!(lit.as_ref().map(|l| l.value.as_str()), Some("a\nFROM b"));
        assert_eq!(lit.as_ref().map(|l| l.masked.as_str()), Some("a  FROM b"));
        let raw = string_literal("r#\"x \"y\"\"#");
        assert_eq!(
            raw.map(|l| (l.value, l.content_start)),
            Some(("x \"y\"".to_owned(), 3))
        );
        assert!(string_literal("42").is_none());
        assert!(string_literal("'c'").is_none());
    }
}
