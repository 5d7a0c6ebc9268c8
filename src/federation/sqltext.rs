//! Where the parts of a statement are in its text, for statements that
//! are sent on to Postgres partly as the client wrote them (a COPY's
//! options, a cursor's declaration, the target of an INSERT): the SQL
//! parser cannot write every statement back as it was written.

use std::cell::RefCell;
use std::ops::Range;

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

/// A statement's first word, past comments.
pub(super) fn first_word(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// A part of a statement outside parentheses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    /// A keyword or unquoted name.
    Word(Range<usize>),
    /// A parenthesized part: what is inside its parentheses.
    Parens(Range<usize>),
}

/// The words and parenthesized parts of `sql` outside parentheses, past
/// comments, strings, quoted names and dollar quotes. `None`: a string,
/// quoted name, comment or parenthesis is not closed.
pub(super) fn top_level(sql: &str) -> Option<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut opened = 0;
    scan(sql, |token, depth| match token {
        Token::Open(i) if depth == 0 => opened = i + 1,
        Token::Close(i) if depth == 0 => pieces.push(Piece::Parens(opened..i)),
        Token::Word(r) if depth == 0 => pieces.push(Piece::Word(r)),
        _ => {}
    })?;
    Some(pieces)
}

/// The statements of a query string, split at its semicolons outside
/// parentheses, strings, quoted names, comments and dollar quotes; empty
/// ones (only blanks and comments) left out. `None`: as [`top_level`].
/// `sql` parsed in Postgres's dialect. A statement is looked at by the
/// router and by each step of answering it: the last few texts parsed on
/// this thread are kept, and a text parsed again is a copy of its tree.
pub(crate) fn parse(sql: &str) -> Result<Vec<Statement>, ParserError> {
    type Parsed = Vec<(String, Result<Vec<Statement>, ParserError>)>;
    const KEPT: usize = 4;
    thread_local! {
        static PARSED: RefCell<Parsed> = const { RefCell::new(Vec::new()) };
    }
    if let Some(found) = PARSED.with_borrow(|p| {
        p.iter()
            .find(|(text, _)| text == sql)
            .map(|(_, parsed)| parsed.clone())
    }) {
        return found;
    }
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, sql);
    PARSED.with_borrow_mut(|p| {
        if p.len() == KEPT {
            drop(p.remove(0));
        }
        p.push((sql.to_string(), parsed.clone()));
    });
    parsed
}

pub(crate) fn statements(sql: &str) -> Option<Vec<&str>> {
    let mut ends = Vec::new();
    scan(sql, |token, depth| {
        if let (Token::Semicolon(i), 0) = (token, depth) {
            ends.push(i);
        }
    })?;
    let mut start = 0;
    let mut statements = Vec::new();
    for end in ends.into_iter().chain([sql.len()]) {
        let statement = sql[start..end].trim();
        if !blank(statement) {
            statements.push(statement);
        }
        start = end + 1;
    }
    Some(statements)
}

/// Whether `sql` holds only white space and comments.
fn blank(sql: &str) -> bool {
    let mut rest = sql.trim_start();
    loop {
        if rest.is_empty() {
            return true;
        }
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.find('\n').map_or("", |n| &after[n..]).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after
                .find("*/")
                .map_or("", |n| &after[n + 2..])
                .trim_start();
        } else {
            return false;
        }
    }
}

/// What [`scan`] meets outside comments, strings, quoted names and dollar
/// quotes.
enum Token {
    Word(Range<usize>),
    Open(usize),
    Close(usize),
    Semicolon(usize),
}

/// Calls `each` with every token of `sql` and the depth of parentheses
/// around it (for a parenthesis, outside it). `None`: a string, quoted
/// name, comment or parenthesis is not closed.
fn scan(sql: &str, mut each: impl FnMut(Token, usize)) -> Option<()> {
    let b = sql.as_bytes();
    let (mut i, mut depth) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(b.len(), |n| i + n);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map(|n| i + n + 4)?;
            }
            b'\'' => {
                let escapes = i > 0 && matches!(b[i - 1], b'e' | b'E');
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'\\' if escapes => i += 2,
                        b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                        b'\'' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'"' => i = quoted_name_end(sql, i)?,
            b'$' => {
                // A dollar quote's tag, or a parameter (`$1`, perhaps at
                // the very end).
                let tag_end = sql[i + 1..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map_or(b.len(), |n| i + 1 + n);
                if b.get(tag_end) == Some(&b'$')
                    && !b[i + 1..tag_end].first().is_some_and(u8::is_ascii_digit)
                {
                    let tag = &sql[i..=tag_end];
                    i = sql[tag_end + 1..]
                        .find(tag)
                        .map(|n| tag_end + 1 + n + tag.len())?;
                } else {
                    i = tag_end;
                }
            }
            b'(' => {
                each(Token::Open(i), depth);
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.checked_sub(1)?;
                each(Token::Close(i), depth);
                i += 1;
            }
            b';' => {
                each(Token::Semicolon(i), depth);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                i = word_end(b, i);
                each(Token::Word(start..i), depth);
            }
            _ => i += 1,
        }
    }
    (depth == 0).then_some(())
}

fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'$')) {
        i += 1;
    }
    i
}

/// Past the quoted name beginning at `start`.
fn quoted_name_end(sql: &str, start: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let mut i = start + 1;
    loop {
        match *b.get(i)? {
            b'"' if b.get(i + 1) == Some(&b'"') => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Where the (possibly qualified, possibly quoted) name beginning at or
/// after `from`, past white space, ends.
pub(super) fn name_end(sql: &str, from: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let mut i = from + sql[from..].len() - sql[from..].trim_start().len();
    loop {
        i = match *b.get(i)? {
            b'"' => quoted_name_end(sql, i)?,
            c if c.is_ascii_alphabetic() || c == b'_' => word_end(b, i),
            _ => return None,
        };
        if b.get(i) != Some(&b'.') {
            return Some(i);
        }
        i += 1;
    }
}

/// Where the parts of a statement's text are.
pub(super) struct Layout {
    /// The first parenthesized part after the first word, inside its
    /// parentheses (the query of `COPY (query)`).
    pub query: Option<Range<usize>>,
    /// Where `word` (TO of a COPY, FOR of a DECLARE) is.
    pub to: usize,
}

/// Finds the first parenthesized part and the first `word` (after the
/// first word) outside parentheses.
pub(super) fn layout(sql: &str, word: &str) -> Option<Layout> {
    let mut query = None;
    let mut words = 0;
    for piece in top_level(sql)? {
        match piece {
            Piece::Parens(inside) if words == 1 && query.is_none() => query = Some(inside),
            Piece::Parens(_) => {}
            Piece::Word(r) => {
                words += 1;
                if words > 1 && sql[r.clone()].eq_ignore_ascii_case(word) {
                    return Some(Layout { query, to: r.start });
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_query_string_into_its_statements() {
        let sql = "SELECT 'a;b', \"c;d\" FROM t; ; -- one; two\n\
                   DO $x$ BEGIN PERFORM 1; END $x$ /* ; */;\n\
                   SELECT (SELECT 1; ) ; SELECT $1;";
        assert_eq!(
            statements(sql).unwrap(),
            [
                "SELECT 'a;b', \"c;d\" FROM t",
                "-- one; two\nDO $x$ BEGIN PERFORM 1; END $x$ /* ; */",
                "SELECT (SELECT 1; )",
                "SELECT $1",
            ]
        );
        assert_eq!(statements("SELECT 1").unwrap(), ["SELECT 1"]);
        assert!(statements(" ; /* only */ ; -- this\n").unwrap().is_empty());
        assert_eq!(statements("SELECT 'open; SELECT 2"), None);
    }

    #[test]
    fn finds_the_parts_outside_parentheses() {
        let sql = "INSERT /* into ( */ INTO \"T (\"\"x\" (a, \"b)\") SELECT 'it''s (', $q$ ) $q$ FROM t -- )\n";
        let words: Vec<&str> = top_level(sql)
            .unwrap()
            .into_iter()
            .map(|p| match p {
                Piece::Word(r) => &sql[r],
                Piece::Parens(r) => &sql[r],
            })
            .collect();
        assert_eq!(
            words,
            ["INSERT", "INTO", "a, \"b)\"", "SELECT", "FROM", "t"]
        );
        let sql = "SELECT a FROM t WHERE b = $1";
        assert_eq!(top_level(sql).unwrap().len(), 6);
        assert_eq!(layout(sql, "where").map(|l| l.to), Some(16));
        assert!(top_level("SELECT (1").is_none());
        assert!(top_level("SELECT 'a").is_none());
        assert!(top_level("SELECT 1)").is_none());
    }

    #[test]
    fn finds_where_a_name_ends() {
        let sql = "INTO  s.\"My \"\"T\".x FROM";
        assert_eq!(&sql[..name_end(sql, 4).unwrap()], "INTO  s.\"My \"\"T\".x");
        assert_eq!(name_end("INTO t", 4), Some(6));
        assert_eq!(name_end("INTO (", 4), None);
    }
}
