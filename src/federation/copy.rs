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
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::link::FieldDescription;
use super::sqltext::{first_word, layout};
use crate::pgtypes::{EncodeError, TextSettings};
use crate::protocol::ErrorFields;

/// The signature, flags and header extension length that open binary COPY
/// data.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
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
    force_quote: Vec<String>,
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
    let statement = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(mut s) if s.len() == 1 => s.remove(0),
        // What the parser cannot read is refused if it copies out.
        _ if copies_out(sql) => return Err(refused("this form of the statement")),
        _ => return Ok(None),
    };
    // Its text, past the source, is sent to Postgres as written.
    let Some(layout) = layout(sql, "to") else {
        return Err(refused("this form of the statement"));
    };
    let Statement::Copy {
        source,
        to: true,
        target,
        options,
        legacy_options,
        ..
    } = &statement
    else {
        return Ok(None);
    };
    if !matches!(target, CopyTarget::Stdout) {
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
    let mut format = Format::Text;
    let (mut delimiter, mut null, mut quote, mut escape) = (None, None, None, None);
    let mut header = false;
    let mut force_quote = Vec::new();
    let mut encoding = None;
    for option in options {
        match option {
            CopyOption::Format(f) => {
                format = match f.value.to_ascii_lowercase().as_str() {
                    "csv" => Format::Csv,
                    "binary" => Format::Binary,
                    _ => Format::Text,
                }
            }
            CopyOption::Delimiter(c) => delimiter = Some(*c),
            CopyOption::Null(s) => null = Some(s.clone()),
            CopyOption::Header(h) => header = *h,
            CopyOption::Quote(c) => quote = Some(*c),
            CopyOption::Escape(c) => escape = Some(*c),
            CopyOption::ForceQuote(cols) => {
                force_quote.extend(cols.iter().map(|c| c.value.clone()));
            }
            CopyOption::Encoding(e) => encoding = Some(e.clone()),
            // Postgres refuses the others for COPY TO.
            CopyOption::Freeze(_) | CopyOption::ForceNotNull(_) | CopyOption::ForceNull(_) => {}
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Binary => format = Format::Binary,
            CopyLegacyOption::Delimiter(c) => delimiter = Some(*c),
            CopyLegacyOption::Null(s) => null = Some(s.clone()),
            CopyLegacyOption::Header => header = true,
            CopyLegacyOption::Csv(csv) => {
                format = Format::Csv;
                for o in csv {
                    match o {
                        CopyLegacyCsvOption::Header => header = true,
                        CopyLegacyCsvOption::Quote(c) => quote = Some(*c),
                        CopyLegacyCsvOption::Escape(c) => escape = Some(*c),
                        CopyLegacyCsvOption::ForceQuote(cols) => {
                            force_quote.extend(cols.iter().map(|c| c.value.clone()));
                        }
                        CopyLegacyCsvOption::ForceNotNull(_) => {}
                    }
                }
            }
            // What Postgres does not read is its syntax error, from the check.
            _ => {}
        }
    }
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
                .map(|f| copy.force_quote.iter().any(|c| *c == f.name))
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
        assert_eq!(c.force_quote, vec!["note".to_string()]);

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

        assert!(parse("SELECT 1").unwrap().is_none());
        assert!(parse("COPY orders FROM STDIN").unwrap().is_none());
        for refused in [
            "COPY orders TO '/tmp/orders.csv'",
            "COPY orders TO PROGRAM 'gzip > /tmp/o.gz'",
            "COPY orders TO STDOUT (ENCODING 'LATIN1')",
            "COPY orders TO STDOUT (FORMAT csv, FORCE_QUOTE *)",
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
