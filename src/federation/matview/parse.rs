//! Reading materialized-view commands: `CREATE`, `REFRESH` and `DROP
//! MATERIALIZED VIEW`, which the SQL parser does not know in full.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// A materialized-view command, as written.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    Create(Create),
    Refresh {
        name: String,
        with_data: bool,
    },
    Drop {
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    },
}

#[derive(Debug, PartialEq)]
pub(crate) struct Create {
    pub name: String,
    pub if_not_exists: bool,
    /// `(a, b)` as written, or empty.
    pub columns: String,
    /// Storage parameters for the table (`fillfactor = 70`).
    pub storage: Vec<String>,
    /// `thermocline.refresh_interval`, as written.
    pub refresh_interval: Option<String>,
    pub query: String,
    pub with_data: bool,
}

/// A cheap check, before any parsing: might this be a materialized-view
/// command?
pub(crate) fn may_be_command(sql: &str) -> bool {
    let mut words = strip_comments(sql).split_ascii_whitespace();
    let mut next_is = |choices: &[&str]| {
        words
            .next()
            .is_some_and(|w| choices.iter().any(|c| w.eq_ignore_ascii_case(c)))
    };
    next_is(&["create", "refresh", "drop"]) && next_is(&["materialized"]) && next_is(&["view"])
}

/// Does `sql` (a materialized-view command) create one?
pub(crate) fn is_create(sql: &str) -> bool {
    strip_comments(sql)
        .get(..6)
        .is_some_and(|w| w.eq_ignore_ascii_case("create"))
}

fn strip_comments(sql: &str) -> &str {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            return s;
        }
    }
}

/// The command `sql` holds; `Err`: a syntax error, as Postgres would report.
pub(crate) fn parse(sql: &str) -> Result<Command, String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| e.to_string())?;
    let mut p = Tokens { tokens, at: 0 };
    let verb = p.word().ok_or("expected a command")?;
    p.expect_words(&["materialized", "view"])?;
    match verb.as_str() {
        "create" => {
            let if_not_exists = p.eat_words(&["if", "not", "exists"]);
            let name = p.name()?;
            let columns = if p.peek() == Some(&Token::LParen) {
                p.parenthesized()?
            } else {
                String::new()
            };
            let mut storage = Vec::new();
            let mut refresh_interval = None;
            if p.eat_words(&["with"]) {
                let options = p.parenthesized()?;
                for option in split_top_level(&options[1..options.len() - 1]) {
                    let (key, value) = option
                        .split_once('=')
                        .map(|(k, v)| (k.trim(), v.trim()))
                        .unwrap_or((option.trim(), ""));
                    if key.eq_ignore_ascii_case("thermocline.refresh_interval") {
                        let value = value.trim_matches('\'').to_string();
                        refresh_interval = Some(value);
                    } else {
                        storage.push(option.trim().to_string());
                    }
                }
            }
            p.expect_words(&["as"])?;
            let mut rest: Vec<Token> = p.tokens[p.at..].to_vec();
            while matches!(rest.last(), Some(Token::Whitespace(_) | Token::SemiColon)) {
                rest.pop();
            }
            let mut with_data = true;
            let words: Vec<String> = rest
                .iter()
                .filter(|t| !matches!(t, Token::Whitespace(_)))
                .rev()
                .take(3)
                .map(|t| t.to_string().to_ascii_lowercase())
                .collect();
            let cut = match words.as_slice() {
                [d, n, w, ..] if d == "data" && n == "no" && w == "with" => 3,
                [d, w, ..] if d == "data" && w == "with" => 2,
                _ => 0,
            };
            if cut > 0 {
                with_data = cut == 2;
                let mut left = cut;
                while left > 0 {
                    if !matches!(rest.pop(), Some(Token::Whitespace(_))) {
                        left -= 1;
                    }
                }
            }
            let query: String = rest.iter().map(ToString::to_string).collect();
            Ok(Command::Create(Create {
                name,
                if_not_exists,
                columns,
                storage,
                refresh_interval,
                query: query.trim().to_string(),
                with_data,
            }))
        }
        "refresh" => {
            p.eat_words(&["concurrently"]);
            let name = p.name()?;
            let with_data = if p.eat_words(&["with", "no", "data"]) {
                false
            } else {
                p.eat_words(&["with", "data"]);
                true
            };
            p.end()?;
            Ok(Command::Refresh { name, with_data })
        }
        "drop" => {
            let if_exists = p.eat_words(&["if", "exists"]);
            let mut names = vec![p.name()?];
            while p.peek() == Some(&Token::Comma) {
                p.next();
                names.push(p.name()?);
            }
            let cascade = p.eat_words(&["cascade"]);
            if !cascade {
                p.eat_words(&["restrict"]);
            }
            p.end()?;
            Ok(Command::Drop {
                names,
                if_exists,
                cascade,
            })
        }
        _ => Err("expected CREATE, REFRESH or DROP".into()),
    }
}

/// Splits `a = 1, b = 'x, y'` at its top-level commas.
pub(super) fn split_top_level(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0, false);
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// A walk over a statement's tokens, whitespace skipped.
struct Tokens {
    tokens: Vec<Token>,
    at: usize,
}

impl Tokens {
    fn skip_space(&mut self) {
        while matches!(self.tokens.get(self.at), Some(Token::Whitespace(_))) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<&Token> {
        self.skip_space();
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        self.skip_space();
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// The next token as an unquoted word, lower-cased.
    fn word(&mut self) -> Option<String> {
        match self.peek() {
            Some(Token::Word(w)) if w.quote_style.is_none() => {
                let v = w.value.to_ascii_lowercase();
                self.at += 1;
                Some(v)
            }
            _ => None,
        }
    }

    /// Consumes `words` if they come next.
    fn eat_words(&mut self, words: &[&str]) -> bool {
        let start = self.at;
        for w in words {
            if self.word().as_deref() != Some(*w) {
                self.at = start;
                return false;
            }
        }
        true
    }

    fn expect_words(&mut self, words: &[&str]) -> Result<(), String> {
        if self.eat_words(words) {
            Ok(())
        } else {
            Err(format!(
                "syntax error: expected {}",
                words.join(" ").to_uppercase()
            ))
        }
    }

    /// A possibly qualified name, as written.
    fn name(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.next() {
                Some(Token::Word(w)) => out.push_str(&Token::Word(w).to_string()),
                _ => return Err("syntax error: expected a name".into()),
            }
            if self.tokens.get(self.at) == Some(&Token::Period) {
                self.at += 1;
                out.push('.');
            } else {
                return Ok(out);
            }
        }
    }

    /// `( … )` as written, parentheses included.
    fn parenthesized(&mut self) -> Result<String, String> {
        if self.next() != Some(Token::LParen) {
            return Err("syntax error: expected (".into());
        }
        let (mut depth, mut out) = (1, String::from("("));
        while depth > 0 {
            let t = self
                .tokens
                .get(self.at)
                .cloned()
                .ok_or("syntax error: unbalanced parentheses")?;
            self.at += 1;
            match t {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                _ => {}
            }
            out.push_str(&t.to_string());
        }
        Ok(out)
    }

    fn end(&mut self) -> Result<(), String> {
        match self.next() {
            None | Some(Token::SemiColon) | Some(Token::EOF) => Ok(()),
            Some(t) => Err(format!("syntax error at or near \"{t}\"")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let Command::Create(c) = parse(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS s.\"Monthly\" (m, n) \
             WITH (thermocline.refresh_interval = '5 minutes', fillfactor = 70) AS \
             SELECT date_trunc('month', t) AS m, count(*) FROM orders GROUP BY 1 WITH NO DATA;",
        )
        .unwrap() else {
            panic!("not a create")
        };
        assert_eq!(c.name, "s.\"Monthly\"");
        assert!(c.if_not_exists && !c.with_data);
        assert_eq!(c.columns, "(m, n)");
        assert_eq!(c.refresh_interval.as_deref(), Some("5 minutes"));
        assert_eq!(c.storage, vec!["fillfactor = 70"]);
        assert_eq!(
            c.query,
            "SELECT date_trunc('month', t) AS m, count(*) FROM orders GROUP BY 1"
        );
        assert_eq!(
            parse("refresh materialized view concurrently v with no data").unwrap(),
            Command::Refresh {
                name: "v".into(),
                with_data: false
            }
        );
        assert_eq!(
            parse("DROP MATERIALIZED VIEW IF EXISTS a, b.c CASCADE").unwrap(),
            Command::Drop {
                names: vec!["a".into(), "b.c".into()],
                if_exists: true,
                cascade: true
            }
        );
        assert!(parse("REFRESH MATERIALIZED VIEW v junk").is_err());
        assert!(may_be_command("-- x\n  Refresh  Materialized View v"));
        assert!(!may_be_command("SELECT 1"));
    }
}
