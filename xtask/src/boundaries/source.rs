//! Finds, in one Rust file, the references that cross a crate boundary without a manifest
//! entry saying so.
//!
//! Works on real tokens (see [`crate::lexer`]), so comments and string contents never match,
//! and every finding has the exact `line:col` of the name to change:
//! - crate references: `use billing::…` (also inside `use {…}` groups), `extern crate
//!   billing`, and `::billing::…` paths anywhere, macro bodies included;
//! - file inclusions: `#[path = "…"]` (also under `cfg_attr`), `include!`, `include_str!`,
//!   `include_bytes!` with a literal or `concat!(env!("CARGO_MANIFEST_DIR"), "…")`;
//! - string literals, for the SQL check.
//!
//! A `use billing::…` is ambiguous when the crate has its own `mod billing` (or imports
//! something `as billing`): Rust then resolves it to the local item, so the scan reports
//! such a `use` only when no local item of that name exists. `extern crate` and `::name`
//! are never ambiguous.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proc_macro2::Delimiter;

use crate::lexer::{Kind, Token, string_literal};

use super::manifest::Position;

/// How a file names another crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefForm {
    /// `use name::…`.
    Use,
    /// `extern crate name`.
    ExternCrate,
    /// `::name::…`.
    AbsolutePath,
}

impl RefForm {
    /// How the form is written, for messages.
    #[must_use]
    pub fn describe(self, name: &str) -> String {
        match self {
            Self::Use => format!("`use {name}`"),
            Self::ExternCrate => format!("`extern crate {name}`"),
            Self::AbsolutePath => format!("the path `::{name}::…`"),
        }
    }
}

/// A crate named in code.
#[derive(Debug, Clone)]
pub struct CrateRef {
    /// The name as written.
    pub name: String,
    /// How it is written.
    pub form: RefForm,
    /// Where the name is.
    pub position: Position,
}

/// A file pulled into the crate's compilation.
#[derive(Debug, Clone)]
pub struct Inclusion {
    /// `#[path]`, `include!`, `include_str!` or `include_bytes!`.
    pub form: &'static str,
    /// The file, resolved to an absolute path (not checked to exist).
    pub target: PathBuf,
    /// Where the path is written.
    pub position: Position,
}

/// A string literal and where it starts.
#[derive(Debug, Clone)]
pub struct Literal {
    /// Where the literal starts (its opening quote or prefix).
    pub position: Position,
    /// The literal as written.
    pub repr: String,
}

/// What one file contains that the lint cares about.
#[derive(Debug, Clone, Default)]
pub struct FileScan {
    /// Crates it names.
    pub crate_refs: Vec<CrateRef>,
    /// Files it includes.
    pub inclusions: Vec<Inclusion>,
    /// Its string literals.
    pub literals: Vec<Literal>,
    /// Names it defines locally with `mod x` or `… as x`, which shadow crates in `use`.
    pub local_names: BTreeSet<String>,
}

/// Keywords that may stand right before a path that starts with `::`.
const PATH_START_KEYWORDS: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "dyn", "else", "for", "if", "impl", "in",
    "let", "match", "move", "mut", "pub", "ref", "return", "static", "type", "unsafe", "use",
    "where", "while", "yield",
];

/// Scans one file's tokens. `file` and `crate_dir` resolve relative inclusion paths.
#[must_use]
pub fn scan(tokens: &[Token], file: &Path, crate_dir: &Path) -> FileScan {
    let mut out = FileScan::default();
    let file_dir = file.parent().unwrap_or(crate_dir);
    for (i, token) in tokens.iter().enumerate() {
        let pos = Position {
            line: token.line,
            col: token.col,
        };
        match &token.kind {
            Kind::Literal(repr) if string_literal(repr).is_some() => {
                out.literals.push(Literal {
                    position: pos,
                    repr: repr.clone(),
                });
            }
            Kind::Ident(word) => match word.as_str() {
                "use" => {
                    let mut roots = Vec::new();
                    use_roots(tokens, i + 1, &mut roots);
                    for (root, absolute) in roots {
                        if let Some(name) = root.ident() {
                            out.crate_refs.push(CrateRef {
                                name: name.to_owned(),
                                // `use ::x` can only mean the crate; `use x` may be a local module.
                                form: if absolute {
                                    RefForm::AbsolutePath
                                } else {
                                    RefForm::Use
                                },
                                position: Position {
                                    line: root.line,
                                    col: root.col,
                                },
                            });
                        }
                    }
                }
                "extern" if tokens.get(i + 1).is_some_and(|t| t.is_ident("crate")) => {
                    if let Some(name_tok) = tokens.get(i + 2)
                        && let Some(name) = name_tok.ident()
                        && name != "self"
                    {
                        out.crate_refs.push(CrateRef {
                            name: name.to_owned(),
                            form: RefForm::ExternCrate,
                            position: Position {
                                line: name_tok.line,
                                col: name_tok.col,
                            },
                        });
                    }
                }
                "mod" | "as" => {
                    if let Some(name) = tokens.get(i + 1).and_then(Token::ident)
                        && name != "_"
                    {
                        out.local_names.insert(name.to_owned());
                    }
                }
                "include" | "include_str" | "include_bytes"
                    if tokens.get(i + 1).is_some_and(|t| t.is_punct('!')) =>
                {
                    if let Some((target, position)) = macro_path(tokens, i + 2, file_dir, crate_dir)
                    {
                        let form = match word.as_str() {
                            "include" => "include!",
                            "include_str" => "include_str!",
                            _ => "include_bytes!",
                        };
                        out.inclusions.push(Inclusion {
                            form,
                            target,
                            position,
                        });
                    }
                }
                _ => {}
            },
            Kind::Punct(':')
                if token.joint && tokens.get(i + 1).is_some_and(|t| t.is_punct(':')) =>
            {
                if is_path_start(tokens, i)
                    && let Some(name_tok) = tokens.get(i + 2)
                    && let Some(name) = name_tok.ident()
                {
                    out.crate_refs.push(CrateRef {
                        name: name.to_owned(),
                        form: RefForm::AbsolutePath,
                        position: Position {
                            line: name_tok.line,
                            col: name_tok.col,
                        },
                    });
                }
            }
            Kind::Punct('#') => {
                if let Some((literal, position)) = path_attribute(tokens, i)
                    && let Some(lit) = string_literal(literal)
                {
                    let target = super::manifest::normalize(&file_dir.join(&lit.value));
                    out.inclusions.push(Inclusion {
                        form: "#[path]",
                        target,
                        position,
                    });
                }
            }
            _ => {}
        }
    }
    // `use ::x` is seen both as a use tree and as a `::x` path.
    out.crate_refs
        .sort_by_key(|r| (r.position, r.form as u8, r.name.clone()));
    out.crate_refs
        .dedup_by(|a, b| a.position == b.position && a.name == b.name);
    out
}

/// Whether the `::` at `i` begins a path (rather than continuing `a::b`).
fn is_path_start(tokens: &[Token], i: usize) -> bool {
    let Some(prev) = i.checked_sub(1).and_then(|p| tokens.get(p)) else {
        return true;
    };
    match &prev.kind {
        Kind::Ident(word) => PATH_START_KEYWORDS.contains(&word.as_str()),
        // `Vec::<u8>::new` continues a path; `-> ::x::T` and `=> ::x::f()` start one.
        Kind::Punct('>') => i
            .checked_sub(2)
            .and_then(|p| tokens.get(p))
            .is_some_and(|t| t.joint && (t.is_punct('-') || t.is_punct('='))),
        _ => true,
    }
}

/// The first segment of every path a `use` tree imports, starting at `i` (after `use`).
fn use_roots<'a>(tokens: &'a [Token], mut i: usize, out: &mut Vec<(&'a Token, bool)>) {
    let absolute = tokens.get(i).is_some_and(|t| t.is_punct(':'))
        && tokens.get(i + 1).is_some_and(|t| t.is_punct(':'));
    if absolute {
        i += 2;
    }
    let Some(token) = tokens.get(i) else { return };
    match &token.kind {
        Kind::Ident(word) if !matches!(word.as_str(), "crate" | "self" | "super" | "Self") => {
            out.push((token, absolute))
        }
        Kind::Open(Delimiter::Brace) => {
            let mut j = i + 1;
            loop {
                use_roots(tokens, j, out);
                // Advance to the `,` or `}` that ends this entry.
                let mut depth = 0usize;
                while let Some(t) = tokens.get(j) {
                    match t.kind {
                        Kind::Open(_) => depth += 1,
                        Kind::Close(_) if depth == 0 => return,
                        Kind::Close(_) => depth -= 1,
                        Kind::Punct(',') if depth == 0 => break,
                        _ => {}
                    }
                    j += 1;
                }
                j += 1;
                if j >= tokens.len() {
                    return;
                }
            }
        }
        _ => {}
    }
}

/// For a `#` at `i` opening `#[path = "…"]` or `#[cfg_attr(…, path = "…")]`: the literal.
fn path_attribute(tokens: &[Token], i: usize) -> Option<(&str, Position)> {
    let mut j = i + 1;
    if tokens.get(j)?.is_punct('!') {
        j += 1;
    }
    if tokens.get(j)?.kind != Kind::Open(Delimiter::Bracket) {
        return None;
    }
    j += 1;
    let literal_after_eq = |k: usize| -> Option<(&str, Position)> {
        if tokens.get(k)?.is_ident("path") && tokens.get(k + 1)?.is_punct('=') {
            let lit = tokens.get(k + 2)?;
            if let Kind::Literal(repr) = &lit.kind {
                return Some((
                    repr.as_str(),
                    Position {
                        line: lit.line,
                        col: lit.col,
                    },
                ));
            }
        }
        None
    };
    if let Some(found) = literal_after_eq(j) {
        return Some(found);
    }
    if tokens.get(j)?.is_ident("cfg_attr")
        && tokens.get(j + 1)?.kind == Kind::Open(Delimiter::Parenthesis)
    {
        let mut depth = 0usize;
        let mut k = j + 2;
        while let Some(t) = tokens.get(k) {
            match t.kind {
                Kind::Open(_) => depth += 1,
                Kind::Close(_) if depth == 0 => break,
                Kind::Close(_) => depth -= 1,
                Kind::Punct(',') if depth == 0 => {
                    if let Some(found) = literal_after_eq(k + 1) {
                        return Some(found);
                    }
                }
                _ => {}
            }
            k += 1;
        }
    }
    None
}

/// Evaluates the argument of `include*!` at `i` (its opening delimiter): a literal, or a
/// `concat!` of literals and `env!("CARGO_MANIFEST_DIR")`. `None` when it cannot be known.
fn macro_path(
    tokens: &[Token],
    i: usize,
    file_dir: &Path,
    crate_dir: &Path,
) -> Option<(PathBuf, Position)> {
    let open = tokens.get(i)?;
    if !matches!(open.kind, Kind::Open(_)) {
        return None;
    }
    let first = tokens.get(i + 1)?;
    let position = Position {
        line: first.line,
        col: first.col,
    };
    if let Kind::Literal(repr) = &first.kind {
        let lit = string_literal(repr)?;
        return Some((
            super::manifest::normalize(&file_dir.join(&lit.value)),
            position,
        ));
    }
    if !(first.is_ident("concat") && tokens.get(i + 2)?.is_punct('!')) {
        return None;
    }
    let mut text = String::new();
    let mut k = i + 4;
    loop {
        let t = tokens.get(k)?;
        match &t.kind {
            Kind::Close(_) => break,
            Kind::Punct(',') => k += 1,
            Kind::Literal(repr) => {
                text.push_str(&string_literal(repr)?.value);
                k += 1;
            }
            Kind::Ident(env) if env == "env" && tokens.get(k + 1)?.is_punct('!') => {
                let Kind::Literal(var) = &tokens.get(k + 3)?.kind else {
                    return None;
                };
                if string_literal(var)?.value != "CARGO_MANIFEST_DIR" {
                    return None;
                }
                text.push_str(&crate_dir.to_string_lossy());
                k += 5;
            }
            _ => return None,
        }
    }
    Some((super::manifest::normalize(&file_dir.join(text)), position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::tokenize;

    fn scan_text(text: &str) -> FileScan {
        let tokens = tokenize(text).expect("test input lexes");
        scan(
            &tokens,
            Path::new("/ws/crates/billing/src/lib.rs"),
            Path::new("/ws/crates/billing"),
        )
    }

    fn refs(text: &str) -> Vec<(String, RefForm, usize, usize)> {
        scan_text(text)
            .crate_refs
            .into_iter()
            .map(|r| (r.name, r.form, r.position.line, r.position.col))
            .collect()
    }

    #[test]
    fn finds_each_way_of_naming_a_crate() {
        assert_eq!(
            refs("use records::Record;"),
            [("records".to_owned(), RefForm::Use, 1, 5)]
        );
        assert_eq!(
            refs("pub use ::records;"),
            [("records".to_owned(), RefForm::AbsolutePath, 1, 11)]
        );
        assert_eq!(refs("use {events::A, records::{B, C}};").len(), 2);
        assert_eq!(
            refs("extern crate records as r;"),
            [("records".to_owned(), RefForm::ExternCrate, 1, 14)]
        );
        assert_eq!(
            refs("fn f() { let x = ::records::g(); }"),
            [("records".to_owned(), RefForm::AbsolutePath, 1, 20)]
        );
        assert_eq!(refs("fn f(x: ::records::A) -> ::records::B {}").len(), 2);
    }

    #[test]
    fn continued_paths_and_local_paths_are_not_crate_references() {
        assert!(refs("use crate::records; use self::a::records; fn f() { a::records::g(); Vec::<u8>::new(); }").is_empty());
        assert!(
            scan_text("mod records; use records::X;")
                .local_names
                .contains("records")
        );
    }

    #[test]
    fn inclusions_resolve_relative_to_the_file_or_the_manifest_dir() {
        let scan = scan_text(
            "#[path = \"../../records/src/x.rs\"] mod x;\n\
             const A: &str = include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/../records/a.sql\"));\n\
             #[cfg_attr(test, path = \"t.rs\")] mod t;",
        );
        let targets: Vec<_> = scan
            .inclusions
            .iter()
            .map(|i| (i.form, i.target.clone()))
            .collect();
        assert_eq!(
            targets,
            [
                ("#[path]", PathBuf::from("/ws/crates/records/src/x.rs")),
                ("include_str!", PathBuf::from("/ws/crates/records/a.sql")),
                ("#[path]", PathBuf::from("/ws/crates/billing/src/t.rs")),
            ]
        );
    }
}
