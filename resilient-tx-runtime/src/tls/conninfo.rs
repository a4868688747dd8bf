//! Where each parameter of a libpq connection string sits, in both of libpq's forms, so
//! that the TLS parameters can be taken out and everything else handed to tokio-postgres
//! byte for byte.
//!
//! The scanning follows tokio-postgres' own parser (`Config::from_str`) step by step, so
//! that both agree on where a parameter begins and ends: a password that contains
//! `sslmode=` stays part of the password. Values of parameters other than the ones
//! taken out are never interpreted here.

use std::ops::Range;

use crate::error::TxError;

/// One `key = value` of a connection string.
pub(super) struct Param<'a> {
    /// The key as written (percent-decoded in a URI).
    pub(super) key: String,
    value: Value<'a>,
    /// The bytes of the whole parameter in the source, key to end of value.
    span: Range<usize>,
}

enum Value<'a> {
    /// A key=value value, quotes removed and backslash escapes resolved.
    Unescaped(String),
    /// A URI query value, still percent-encoded.
    Encoded(&'a str),
}

impl Param<'_> {
    /// The value as libpq reads it. A URI value that is not UTF-8 once decoded is an
    /// error naming the key (never the value).
    pub(super) fn value(&self) -> Result<String, TxError> {
        match &self.value {
            Value::Unescaped(value) => Ok(value.clone()),
            Value::Encoded(raw) => percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| {
                    TxError::config(format!(
                        "invalid database URL: the value of {} is not UTF-8 once percent-decoded",
                        self.key
                    ))
                }),
        }
    }
}

/// A connection string cut into its parameters.
pub(super) struct ConnInfo<'a> {
    source: &'a str,
    form: Form,
    params: Vec<Param<'a>>,
}

enum Form {
    KeyValue,
    /// `postgres://…`; `query` is where the parameters after `?` begin, if there is a `?`.
    Uri {
        query: Option<usize>,
    },
}

impl<'a> ConnInfo<'a> {
    /// Cuts `source` into parameters. Errors are the ones tokio-postgres would report
    /// for the same string, worded without quoting any of it.
    pub(super) fn parse(source: &'a str) -> Result<ConnInfo<'a>, TxError> {
        match ["postgres://", "postgresql://"].iter().find_map(|prefix| {
            source
                .strip_prefix(prefix)
                .map(|rest| source.len() - rest.len())
        }) {
            Some(after_scheme) => parse_uri(source, after_scheme),
            None => parse_key_value(source),
        }
    }

    /// The parameters in the order written (a key may occur more than once: as in libpq
    /// and tokio-postgres, the last occurrence wins).
    pub(super) fn params(&self) -> &[Param<'a>] {
        &self.params
    }

    /// The source without the parameters `drop` selects, with `key=value` added.
    /// `value` must need no quoting or encoding (it is one of tokio-postgres' sslmode
    /// names).
    pub(super) fn rewrite(&self, drop: impl Fn(&str) -> bool, key: &str, value: &str) -> String {
        let kept = self
            .params
            .iter()
            .filter(|p| !drop(&p.key))
            .map(|p| &self.source[p.span.clone()]);
        match self.form {
            Form::KeyValue => {
                // The added parameter goes first: a string may end in a lone backslash,
                // which would escape a separator written after it.
                let mut out = format!("{key}={value}");
                for param in kept {
                    out.push(' ');
                    out.push_str(param);
                }
                out
            }
            Form::Uri { query } => {
                let mut out = match query {
                    Some(start) => self.source[..start].to_owned(),
                    None => format!("{}?", self.source),
                };
                for param in kept {
                    out.push_str(param);
                    out.push('&');
                }
                out.push_str(key);
                out.push('=');
                out.push_str(value);
                out
            }
        }
    }
}

/// libpq's key=value form: `host=a port=5432 password='it''s \'quoted\''`.
fn parse_key_value(source: &str) -> Result<ConnInfo<'_>, TxError> {
    let mut scanner = Scanner { source, pos: 0 };
    let mut params = Vec::new();
    loop {
        scanner.skip_whitespace();
        let start = scanner.pos;
        let key = scanner.take_while(|c| !c.is_whitespace() && c != '=');
        if key.is_empty() {
            // tokio-postgres stops at the first thing that is not a keyword, silently.
            break;
        }
        scanner.skip_whitespace();
        if scanner.next() != Some('=') {
            return Err(syntax_error(format!("{key} is not followed by '='")));
        }
        scanner.skip_whitespace();
        let value = if scanner.peek() == Some('\'') {
            scanner.next();
            scanner.quoted_value().ok_or_else(|| {
                syntax_error(format!("the quoted value of {key} has no closing quote"))
            })?
        } else {
            let value = scanner.simple_value();
            if value.is_empty() {
                return Err(syntax_error(format!("{key} has no value")));
            }
            value
        };
        params.push(Param {
            key: key.to_owned(),
            value: Value::Unescaped(value),
            span: start..scanner.pos,
        });
    }
    Ok(ConnInfo {
        source,
        form: Form::KeyValue,
        params,
    })
}

fn syntax_error(what: String) -> TxError {
    TxError::config(format!("invalid connection string: {what}"))
}

struct Scanner<'a> {
    source: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<char> {
        self.source[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.next();
        }
        &self.source[start..self.pos]
    }

    fn skip_whitespace(&mut self) {
        self.take_while(char::is_whitespace);
    }

    /// Up to the next unescaped whitespace; a backslash takes the next character as it
    /// is (a lone backslash at the very end is dropped, as tokio-postgres drops it).
    fn simple_value(&mut self) -> String {
        let mut value = String::new();
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                break;
            }
            self.next();
            if c == '\\' {
                value.extend(self.next());
            } else {
                value.push(c);
            }
        }
        value
    }

    /// After an opening quote: up to the closing one, which is consumed. `None` when the
    /// string ends first.
    fn quoted_value(&mut self) -> Option<String> {
        let mut value = String::new();
        loop {
            match self.next()? {
                '\'' => return Some(value),
                '\\' => value.push(self.next()?),
                c => value.push(c),
            }
        }
    }
}

/// libpq's URI form: `postgres://user:pw@h1:5432,h2/db?key=value&key=value`.
fn parse_uri(source: &str, after_scheme: usize) -> Result<ConnInfo<'_>, TxError> {
    // As tokio-postgres: the credentials end at the first '@' anywhere, the query starts
    // at the first '?' after them (an unencoded '?' in a password is fine, one in a
    // query value before an '@' is not).
    let rest = &source[after_scheme..];
    let after_credentials = after_scheme + rest.find('@').map_or(0, |at| at + 1);
    let query = source[after_credentials..]
        .find('?')
        .map(|q| after_credentials + q + 1);
    let mut params = Vec::new();
    if let Some(mut pos) = query {
        while pos < source.len() {
            let start = pos;
            let Some(eq) = source[pos..].find('=') else {
                return Err(TxError::config(
                    "invalid database URL: a query parameter has no '=' and value",
                ));
            };
            // tokio-postgres takes the key up to the next '=' even across a '&'; so do we,
            // so that both see the same keys.
            let key = percent_encoding::percent_decode_str(&source[pos..pos + eq])
                .decode_utf8_lossy()
                .into_owned();
            let value_start = pos + eq + 1;
            let value_end = source[value_start..]
                .find('&')
                .map_or(source.len(), |amp| value_start + amp);
            params.push(Param {
                key,
                value: Value::Encoded(&source[value_start..value_end]),
                span: start..value_end,
            });
            pos = value_end + 1;
        }
    }
    Ok(ConnInfo {
        source,
        form: Form::Uri { query },
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(source: &str) -> Vec<(String, String)> {
        ConnInfo::parse(source)
            .expect("parses")
            .params()
            .iter()
            .map(|p| (p.key.clone(), p.value().expect("value")))
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn key_value_quotes_escapes_and_spaces_around_equals() {
        assert_eq!(
            pairs(
                r"host=h1,h2  user = app sslrootcert='/path with space/ca.pem' password='it\'s' dbname=a\ b"
            ),
            owned(&[
                ("host", "h1,h2"),
                ("user", "app"),
                ("sslrootcert", "/path with space/ca.pem"),
                ("password", "it's"),
                ("dbname", "a b"),
            ])
        );
        assert_eq!(pairs(r"a='' b='x\\y'"), owned(&[("a", ""), ("b", r"x\y")]));
    }

    #[test]
    fn key_value_errors_name_the_key_and_never_the_value() {
        let message = |s: &str| {
            ConnInfo::parse(s)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let unterminated = message("user=u password='secret");
        assert!(unterminated.contains("password"), "{unterminated}");
        assert!(!unterminated.contains("secret"), "{unterminated}");
        assert!(message("host").contains("host is not followed by '='"));
        assert!(message("host=").contains("host has no value"));
    }

    #[test]
    fn uri_values_are_percent_decoded_and_keys_too() {
        assert_eq!(
            pairs("postgres://u:p%40ss@h/db?sslrootcert=%2Fa%20b%2Fca.pem&ssl%6Dode=require&x=1+2"),
            owned(&[
                ("sslrootcert", "/a b/ca.pem"),
                ("sslmode", "require"),
                ("x", "1+2"),
            ])
        );
        assert!(pairs("postgresql://h/db").is_empty());
        assert!(pairs("postgres://h/db?").is_empty());
    }

    #[test]
    fn uri_query_starts_after_the_credentials() {
        // A '?' inside the password is part of the password.
        assert_eq!(
            pairs("postgres://u:a?b@h/db?sslmode=disable"),
            owned(&[("sslmode", "disable")])
        );
    }

    #[test]
    fn uri_value_that_is_not_utf8_is_an_error_naming_the_key() {
        let info = ConnInfo::parse("postgres://h/db?sslkey=%FF").expect("parses");
        let error = info.params()[0].value().expect_err("error").to_string();
        assert!(error.contains("sslkey"), "{error}");
    }

    #[test]
    fn rewrite_keeps_every_other_parameter_byte_for_byte() {
        let source =
            r"host=h password='a b\' sslmode=disable' sslmode=verify-full sslrootcert=x user=u\";
        let info = ConnInfo::parse(source).expect("parses");
        let out = info.rewrite(|k| k.starts_with("ssl"), "sslmode", "require");
        assert_eq!(
            out,
            r"sslmode=require host=h password='a b\' sslmode=disable' user=u\"
        );

        let uri = "postgres://u:pw@h1:5432,h2/db?sslmode=verify-full&sslrootcert=%2Fca.pem&target_session_attrs=read-write";
        let info = ConnInfo::parse(uri).expect("parses");
        assert_eq!(
            info.rewrite(|k| k.starts_with("ssl"), "sslmode", "require"),
            "postgres://u:pw@h1:5432,h2/db?target_session_attrs=read-write&sslmode=require"
        );
        let info = ConnInfo::parse("postgres://h/db").expect("parses");
        assert_eq!(
            info.rewrite(|_| true, "sslmode", "prefer"),
            "postgres://h/db?sslmode=prefer"
        );
    }
}
