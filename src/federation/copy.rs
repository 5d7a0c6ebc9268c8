//! `COPY … TO STDOUT` of a tiered table, or of a query that reads one
//! (psql's `\copy`, a driver's copy-out, an export tool): the rows of the
//! whole history, written in the COPY format Postgres writes (text, CSV or
//! binary) with the options it was given.
//!
//! Postgres checks the statement first: the same COPY, over the same read
//! limited to no rows, so options, names and privileges fail with its own
//! errors. The read itself is then answered as any federated read, and its
//! rows written as COPY writes them, one CopyData message per row.

use datafusion::arrow::array::ArrayRef;
use datafusion::sql::sqlparser::ast::{CopySource, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::link::FieldDescription;
use super::sqltext::{first_word, layout};
use crate::pgtypes::{EncodeError, TextSettings};
use crate::protocol::ErrorFields;

/// The signature, flags and header extension length that open binary COPY
/// data.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Format {
    #[default]
    Text,
    Csv,
    Binary,
}

/// A `COPY … TO STDOUT` as thermocline answers it.
#[derive(Debug)]
pub(crate) struct CopyTo {
    /// The read whose rows are copied.
    pub select: String,
    /// The same COPY over that read limited to no rows, for Postgres to
    /// check.
    pub check: String,
    format: Format,
    delimiter: u8,
    null: Vec<u8>,
    header: bool,
    quote: u8,
    escape: u8,
    /// Columns whose non-NULL values are always quoted (CSV).
    force_quote: ForceQuote,
}

/// `FORCE_QUOTE` of a CSV COPY.
#[derive(Debug, Default, PartialEq)]
enum ForceQuote {
    #[default]
    None,
    /// `FORCE_QUOTE *`: every column.
    All,
    Columns(Vec<String>),
}

/// What follows `TO` in a COPY: where to, and its options, in the
/// parenthesized syntax or the older one of words.
#[derive(Debug, Default)]
struct Options {
    to_stdout: bool,
    format: Format,
    delimiter: Option<char>,
    null: Option<String>,
    quote: Option<char>,
    escape: Option<char>,
    header: bool,
    force_quote: ForceQuote,
    encoding: Option<String>,
}

impl Options {
    /// Reads `TO STDOUT [WITH] (…)` or `TO STDOUT [WITH] CSV HEADER …`.
    /// Options Postgres rejects are left as they are: its check of the
    /// statement reports them. `None`: the text cannot be read.
    fn read(text: &str) -> Option<Options> {
        use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
        let tokens: Vec<Token> = Tokenizer::new(&PostgreSqlDialect {}, text)
            .tokenize()
            .ok()?
            .into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon))
            .collect();
        let word = |t: Option<&Token>| match t {
            Some(Token::Word(w)) => Some(w.value.to_ascii_lowercase()),
            _ => None,
        };
        let mut o = Options {
            to_stdout: word(tokens.get(1)).as_deref() == Some("stdout"),
            ..Options::default()
        };
        let mut at = 2;
        if word(tokens.get(at)).as_deref() == Some("with") {
            at += 1;
        }
        let rest = &tokens[at.min(tokens.len())..];
        match rest.first() {
            Some(Token::LParen) => o.read_list(&rest[1..])?,
            _ => o.read_words(rest)?,
        }
        Some(o)
    }

    /// `(name [value], …)`.
    fn read_list(
        &mut self,
        mut tokens: &[datafusion::sql::sqlparser::tokenizer::Token],
    ) -> Option<()> {
        use datafusion::sql::sqlparser::tokenizer::Token;
        loop {
            let Token::Word(name) = tokens.first()? else {
                return None;
            };
            // The value: what comes before the next comma or closing
            // parenthesis outside parentheses.
            let mut depth = 0;
            let end = tokens[1..].iter().position(|t| {
                match t {
                    Token::LParen => depth += 1,
                    Token::RParen if depth > 0 => depth -= 1,
                    Token::RParen | Token::Comma if depth == 0 => return true,
                    _ => {}
                }
                false
            })? + 1;
            self.set(&name.value.to_ascii_lowercase(), &tokens[1..end]);
            match tokens[end] {
                Token::Comma => tokens = &tokens[end + 1..],
                _ => return Some(()),
            }
        }
    }

    fn set(&mut self, name: &str, value: &[datafusion::sql::sqlparser::tokenizer::Token]) {
        use datafusion::sql::sqlparser::tokenizer::Token;
        let text = match value {
            [Token::Word(w)] => Some(w.value.to_ascii_lowercase()),
            [Token::SingleQuotedString(s) | Token::EscapedStringLiteral(s)] => Some(s.clone()),
            [Token::Number(n, _)] => Some(n.clone()),
            _ => None,
        };
        let char_of = |t: &Option<String>| t.as_ref().and_then(|s| s.chars().next());
        match name {
            "format" => {
                self.format = match text.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    Some("csv") => Format::Csv,
                    Some("binary") => Format::Binary,
                    _ => Format::Text,
                }
            }
            "delimiter" => self.delimiter = char_of(&text),
            "null" => self.null = text,
            "quote" => self.quote = char_of(&text),
            "escape" => self.escape = char_of(&text),
            "encoding" => self.encoding = text,
            "header" => {
                self.header = !matches!(
                    text.as_deref().map(str::to_ascii_lowercase).as_deref(),
                    Some("false" | "off" | "0" | "no")
                )
            }
            "force_quote" => self.force_quote = force_quote(value),
            _ => {}
        }
    }

    /// The older syntax: `BINARY`, `DELIMITER [AS] 'c'`, `NULL [AS] 's'`,
    /// `HEADER`, `CSV`, `QUOTE [AS] 'c'`, `ESCAPE [AS] 'c'`,
    /// `FORCE QUOTE { * | column, … }`.
    fn read_words(
        &mut self,
        tokens: &[datafusion::sql::sqlparser::tokenizer::Token],
    ) -> Option<()> {
        use datafusion::sql::sqlparser::tokenizer::Token;
        let mut at = 0;
        let string = |at: &mut usize| {
            if matches!(&tokens.get(*at), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("as"))
            {
                *at += 1;
            }
            let s = match tokens.get(*at)? {
                Token::SingleQuotedString(s) | Token::EscapedStringLiteral(s) => s.clone(),
                _ => return None,
            };
            *at += 1;
            Some(s)
        };
        while let Some(t) = tokens.get(at) {
            let Token::Word(w) = t else {
                return None;
            };
            at += 1;
            match w.value.to_ascii_lowercase().as_str() {
                "binary" => self.format = Format::Binary,
                "csv" => self.format = Format::Csv,
                "header" => self.header = true,
                "delimiter" => self.delimiter = string(&mut at)?.chars().next(),
                "null" => self.null = Some(string(&mut at)?),
                "quote" => self.quote = string(&mut at)?.chars().next(),
                "escape" => self.escape = string(&mut at)?.chars().next(),
                "force" => {
                    let Some(Token::Word(q)) = tokens.get(at) else {
                        return None;
                    };
                    if !q.value.eq_ignore_ascii_case("quote") {
                        // FORCE NOT NULL: refused by Postgres for COPY TO.
                        return Some(());
                    }
                    at += 1;
                    // `*`, or columns separated by commas.
                    let first = at;
                    if matches!(tokens.get(at), Some(Token::Mul)) {
                        at += 1;
                    } else {
                        while matches!(tokens.get(at), Some(Token::Word(_))) {
                            at += 1;
                            if !matches!(tokens.get(at), Some(Token::Comma)) {
                                break;
                            }
                            at += 1;
                        }
                    }
                    self.force_quote = force_quote(&tokens[first..at]);
                }
                _ => return None,
            }
        }
        Some(())
    }
}

/// A FORCE_QUOTE value: `*`, `(a, b)` or (older syntax) `a, b`.
fn force_quote(value: &[datafusion::sql::sqlparser::tokenizer::Token]) -> ForceQuote {
    use datafusion::sql::sqlparser::tokenizer::Token;
    if matches!(value, [Token::Mul]) {
        return ForceQuote::All;
    }
    ForceQuote::Columns(
        value
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
                Token::Word(w) => Some(w.value.to_lowercase()),
                _ => None,
            })
            .collect(),
    )
}

/// Whether `sql` may be a COPY: its first word, past comments.
pub(crate) fn may_be_copy(sql: &str) -> bool {
    first_word(sql).eq_ignore_ascii_case("copy")
}

/// Whether a COPY the parser cannot read copies out: it has the word TO.
pub(crate) fn copies_out(sql: &str) -> bool {
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .is_ok_and(|tokens| {
            tokens
                .iter()
                .any(|t| matches!(t, Token::Word(w) if w.keyword == Keyword::TO))
        })
}

/// Reads a `COPY … TO` statement. `Ok(None)`: it is not one.
pub(crate) fn parse(sql: &str) -> Result<Option<CopyTo>, ErrorFields> {
    if !may_be_copy(sql) {
        return Ok(None);
    }
    let refused = |what: &str| {
        ErrorFields::error(
            "0A000",
            format!("{what} is not supported yet for COPY of the history of a tiered table"),
        )
    };
    // Its text, past the source, is sent to Postgres as written.
    let Some(layout) = layout(sql, "to") else {
        return match copies_out(sql) {
            true => Err(refused("this form of the statement")),
            false => Ok(None),
        };
    };
    // The source is read by the SQL parser, the rest by `Options` (which
    // reads the spellings Postgres accepts that the parser does not).
    let source_sql = format!("{} TO STDOUT", &sql[..layout.to]);
    let statement = match Parser::parse_sql(&PostgreSqlDialect {}, &source_sql) {
        Ok(mut s) if s.len() == 1 => s.remove(0),
        _ => return Err(refused("this form of the statement")),
    };
    let Statement::Copy { source, .. } = &statement else {
        return Ok(None);
    };
    let Some(o) = Options::read(&sql[layout.to..]) else {
        return match copies_out(sql) {
            true => Err(refused("this form of the statement")),
            false => Ok(None),
        };
    };
    if !o.to_stdout {
        return Err(ErrorFields::error(
            "0A000",
            "COPY of the history of a tiered table to a file or program on the server is not \
             supported; use COPY … TO STDOUT (psql's \\copy) instead",
        ));
    }
    let select = match source {
        CopySource::Table {
            table_name,
            columns,
        } => {
            let list = match columns.is_empty() {
                true => "*".to_string(),
                false => columns
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            format!("SELECT {list} FROM {table_name}")
        }
        CopySource::Query(query) => match &layout.query {
            Some(r) => sql[r.clone()].to_string(),
            None => query.to_string(),
        },
    };
    let Options {
        format,
        delimiter,
        null,
        quote,
        escape,
        header,
        force_quote,
        encoding,
        ..
    } = o;
    if let Some(e) = &encoding {
        let e = e.to_ascii_lowercase().replace(['-', '_'], "");
        if !matches!(e.as_str(), "utf8" | "unicode") {
            return Err(refused("an ENCODING other than UTF8"));
        }
    }
    let byte = |c: Option<char>, default: u8| c.map_or(default, |c| c as u32 as u8);
    let csv = format == Format::Csv;
    let quote = byte(quote, b'"');
    let copy = CopyTo {
        check: format!(
            "COPY (SELECT * FROM ({select}) AS copied LIMIT 0) {}",
            &sql[layout.to..]
        ),
        select,
        format,
        delimiter: byte(delimiter, if csv { b',' } else { b'\t' }),
        null: null
            .unwrap_or_else(|| if csv { "" } else { "\\N" }.to_string())
            .into_bytes(),
        header,
        quote,
        escape: byte(escape, quote),
        force_quote,
    };
    Ok(Some(copy))
}

/// Writes the rows of one COPY.
pub(crate) struct Encoder<'a> {
    copy: &'a CopyTo,
    /// Per column: always quoted.
    forced: Vec<bool>,
    /// The binary header, until it goes out with the first row.
    header_due: bool,
    value: Vec<u8>,
}

impl<'a> Encoder<'a> {
    pub(crate) fn new(copy: &'a CopyTo, fields: &[FieldDescription]) -> Self {
        Encoder {
            copy,
            forced: fields
                .iter()
                .map(|f| match &copy.force_quote {
                    ForceQuote::None => false,
                    ForceQuote::All => true,
                    ForceQuote::Columns(c) => c.contains(&f.name),
                })
                .collect(),
            header_due: copy.format == Format::Binary,
            value: Vec::new(),
        }
    }

    /// CopyOutResponse, then the header line when one was asked for.
    pub(crate) fn begin(&mut self, out: &mut Vec<u8>, fields: &[FieldDescription]) {
        let binary = u8::from(self.copy.format == Format::Binary);
        let mut body = vec![binary];
        body.extend_from_slice(&(fields.len() as i16).to_be_bytes());
        for _ in fields {
            body.extend_from_slice(&i16::from(binary).to_be_bytes());
        }
        crate::protocol::put_message(out, b'H', &body);
        if self.copy.header && self.copy.format != Format::Binary {
            let mut line = Vec::new();
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    line.push(self.copy.delimiter);
                }
                self.put_value(&mut line, f.name.as_bytes(), false, fields.len());
            }
            line.push(b'\n');
            crate::protocol::put_message(out, b'd', &line);
        }
    }

    /// One row's CopyData body into `line`.
    pub(crate) fn row(
        &mut self,
        line: &mut Vec<u8>,
        columns: &[ArrayRef],
        r: usize,
        fields: &[FieldDescription],
        text: &TextSettings,
    ) -> Result<(), EncodeError> {
        line.clear();
        if self.copy.format == Format::Binary {
            if std::mem::take(&mut self.header_due) {
                line.extend_from_slice(BINARY_HEADER);
            }
            line.extend_from_slice(&(fields.len() as i16).to_be_bytes());
            for (c, f) in columns.iter().zip(fields) {
                let at = line.len();
                line.extend_from_slice(&[0; 4]);
                let len = match crate::pgtypes::write_binary(line, c.as_ref(), r, f.type_oid)? {
                    true => (line.len() - at - 4) as i32,
                    false => -1,
                };
                line[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            return Ok(());
        }
        for (i, (c, f)) in columns.iter().zip(fields).enumerate() {
            if i > 0 {
                line.push(self.copy.delimiter);
            }
            let mut value = std::mem::take(&mut self.value);
            value.clear();
            let present = crate::pgtypes::write_text(&mut value, c.as_ref(), r, f.type_oid, text);
            match present {
                Ok(true) => self.put_value(line, &value, self.forced[i], fields.len()),
                Ok(false) => line.extend_from_slice(&self.copy.null),
                Err(e) => {
                    self.value = value;
                    return Err(e);
                }
            }
            self.value = value;
        }
        line.push(b'\n');
        Ok(())
    }

    /// What ends the data: the binary trailer (with the header, when no
    /// row carried it), then CopyDone.
    pub(crate) fn end(&mut self, out: &mut Vec<u8>) {
        if self.copy.format == Format::Binary {
            let mut last = Vec::new();
            if std::mem::take(&mut self.header_due) {
                last.extend_from_slice(BINARY_HEADER);
            }
            last.extend_from_slice(&(-1i16).to_be_bytes());
            crate::protocol::put_message(out, b'd', &last);
        }
        crate::protocol::put_message(out, b'c', b"");
    }

    fn put_value(&self, line: &mut Vec<u8>, value: &[u8], forced: bool, columns: usize) {
        match self.copy.format {
            Format::Csv => put_csv(self.copy, line, value, forced, columns == 1),
            _ => put_text(line, value, self.copy.delimiter),
        }
    }
}

/// A value as COPY's text format writes it: backslash, the delimiter and
/// control characters escaped.
fn put_text(line: &mut Vec<u8>, value: &[u8], delimiter: u8) {
    for &b in value {
        let escaped = match b {
            0x08 => Some(b'b'),
            0x0c => Some(b'f'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            b'\t' => Some(b't'),
            0x0b => Some(b'v'),
            _ => None,
        };
        match escaped {
            Some(e) => line.extend_from_slice(&[b'\\', e]),
            None if b == b'\\' || b == delimiter => line.extend_from_slice(&[b'\\', b]),
            None => line.push(b),
        }
    }
}

/// A value as COPY's CSV format writes it: quoted when asked to, when it
/// reads as the NULL string, or when it holds the delimiter, the quote or
/// a line break (and a lone `\.` of a single column), with the quote and
/// the escape character escaped inside.
fn put_csv(copy: &CopyTo, line: &mut Vec<u8>, value: &[u8], forced: bool, single: bool) {
    let quoted = forced
        || value == copy.null.as_slice()
        || (single && value == b"\\.")
        || value
            .iter()
            .any(|&b| b == copy.delimiter || b == copy.quote || b == b'\n' || b == b'\r');
    if !quoted {
        line.extend_from_slice(value);
        return;
    }
    line.push(copy.quote);
    for &b in value {
        if b == copy.quote || b == copy.escape {
            line.push(copy.escape);
        }
        line.push(b);
    }
    line.push(copy.quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(sql: &str) -> CopyTo {
        parse(sql).unwrap().unwrap()
    }

    #[test]
    fn reads_the_source_and_options() {
        let c = copy(
            "COPY public.orders (id, note) TO STDOUT WITH (FORMAT csv, HEADER, FORCE_QUOTE (note))",
        );
        assert_eq!(c.select, "SELECT id, note FROM public.orders");
        assert_eq!(
            c.check,
            "COPY (SELECT * FROM (SELECT id, note FROM public.orders) AS copied LIMIT 0) TO STDOUT \
             WITH (FORMAT csv, HEADER, FORCE_QUOTE (note))"
        );
        assert_eq!(
            (c.format, c.delimiter, c.quote, c.escape),
            (Format::Csv, b',', b'"', b'"')
        );
        assert!(c.header && c.null.is_empty());
        assert_eq!(c.force_quote, ForceQuote::Columns(vec!["note".to_string()]));

        let c = copy("-- psql\n/* \\copy */ copy orders to stdout csv header delimiter ';'");
        assert_eq!(c.select, "SELECT * FROM orders");
        assert_eq!((c.format, c.delimiter, c.header), (Format::Csv, b';', true));

        let c = copy("COPY (SELECT id FROM orders ORDER BY id) TO STDOUT");
        assert_eq!(c.select, "SELECT id FROM orders ORDER BY id");
        // Written as they were: options, strings, comments.
        let c = copy(
            "copy ( select 'a '' to (', $x$ ) to $x$, \"to\" /* ) to */ from orders -- to\n ) To stdout (QUOTE '''', NULL E'\\\\N')",
        );
        assert_eq!(
            c.select,
            " select 'a '' to (', $x$ ) to $x$, \"to\" /* ) to */ from orders -- to\n "
        );
        assert!(
            c.check.ends_with(") To stdout (QUOTE '''', NULL E'\\\\N')"),
            "{}",
            c.check
        );
        assert_eq!((c.quote, c.null.as_slice()), (b'\'', &b"\\N"[..]));
        assert_eq!(
            (c.format, c.delimiter, c.null.as_slice()),
            (Format::Text, b'\t', &b"\\N"[..])
        );
        assert_eq!(
            copy("COPY orders TO STDOUT (FORMAT binary)").format,
            Format::Binary
        );
        assert_eq!(copy("COPY orders TO STDOUT BINARY").format, Format::Binary);

        // The spellings Postgres accepts that the SQL parser does not.
        let c = copy("COPY orders TO STDOUT (FORMAT 'csv', HEADER on, FORCE_QUOTE *)");
        assert_eq!(
            (c.format, c.header, c.force_quote),
            (Format::Csv, true, ForceQuote::All)
        );
        let c = copy("COPY orders TO STDOUT (FORMAT \"csv\", HEADER 0, DELIMITER E'\\t')");
        assert_eq!(
            (c.format, c.header, c.delimiter),
            (Format::Csv, false, b'\t')
        );
        let c = copy("COPY orders TO STDOUT WITH CSV HEADER FORCE QUOTE * NULL AS 'x';");
        assert_eq!(
            (c.header, c.force_quote, c.null.as_slice()),
            (true, ForceQuote::All, &b"x"[..])
        );
        let c = copy("COPY orders TO STDOUT CSV FORCE QUOTE id, \"Note\" QUOTE AS '|'");
        assert_eq!(
            (c.force_quote, c.quote),
            (ForceQuote::Columns(vec!["id".into(), "Note".into()]), b'|')
        );
        assert!(parse("SELECT 1").unwrap().is_none());
        assert!(parse("COPY orders FROM STDIN").unwrap().is_none());
        for refused in [
            "COPY orders TO '/tmp/orders.csv'",
            "COPY orders TO PROGRAM 'gzip > /tmp/o.gz'",
            "COPY orders TO STDOUT (ENCODING 'LATIN1')",
        ] {
            assert_eq!(parse(refused).unwrap_err().code, "0A000", "{refused}");
        }
    }

    #[test]
    fn values_are_escaped_as_copy_escapes_them() {
        let mut line = Vec::new();
        put_text(&mut line, b"a\tb\\c\nd\re\x08\x0c\x0b|\x01", b'|');
        assert_eq!(line, b"a\\tb\\\\c\\nd\\re\\b\\f\\v\\|\x01");

        let c = copy("COPY orders TO STDOUT (FORMAT csv, ESCAPE '\\')");
        let csv = |v: &[u8], forced, single| {
            let mut line = Vec::new();
            put_csv(&c, &mut line, v, forced, single);
            String::from_utf8(line).unwrap()
        };
        assert_eq!(csv(b"plain", false, false), "plain");
        assert_eq!(csv(b"plain", true, false), "\"plain\"");
        assert_eq!(csv(b"", false, false), "\"\"");
        assert_eq!(csv(b"a,b", false, false), "\"a,b\"");
        assert_eq!(
            csv(b"say \"hi\" \\", false, false),
            "\"say \\\"hi\\\" \\\\\""
        );
        assert_eq!(csv(b"\\", false, false), "\\");
        assert_eq!(csv(b"\\.", false, true), "\"\\\\.\"");
        assert_eq!(csv(b"\\.", false, false), "\\.");
    }
}
