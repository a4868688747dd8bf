//! The registry's record and the request bodies that create or change it, with their
//! validation. Validation happens before any transaction starts, so bad input never
//! costs a database round trip.

use serde::{Deserialize, Serialize};

/// Longest server name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest URL accepted, in characters.
pub const MAX_URL_CHARS: usize = 2048;

/// A registered server, as stored and as the API returns it.
///
/// `Deserialize` too: keyed creates store this value with their idempotency key and
/// hand it back to a client that repeats the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// Assigned by the database.
    pub id: i64,
    /// Unique across the registry.
    pub name: String,
    /// Where the server answers (`http://` or `https://`).
    pub url: String,
    /// When the server was registered, RFC 3339 in UTC.
    pub created_at: String,
    /// When the server was last changed, RFC 3339 in UTC.
    pub updated_at: String,
}

/// Body of `POST /api/servers` and `PUT /api/servers/{id}`.
///
/// `Serialize` too: a keyed create stores its fingerprint with the key, so that the
/// key sent again with another body is refused rather than answered with the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    /// Unique name.
    pub name: String,
    /// `http://` or `https://` URL.
    pub url: String,
}

/// Body of `PATCH /api/servers/{id}`: the fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    /// New name, if it changes.
    pub name: Option<String>,
    /// New URL, if it changes.
    pub url: Option<String>,
}

/// Why a request body was refused; the message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl NewServer {
    /// Checks the name and the URL.
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name(&self.name)?;
        validate_url(&self.url)
    }
}

impl From<NewServer> for ServerPatch {
    fn from(new: NewServer) -> Self {
        ServerPatch {
            name: Some(new.name),
            url: Some(new.url),
        }
    }
}

impl ServerPatch {
    /// Checks the fields present; an empty patch is refused as a likely client bug.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.name.is_none() && self.url.is_none() {
            return Err(Invalid(
                "nothing to change: give `name`, `url` or both".to_owned(),
            ));
        }
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if let Some(url) = &self.url {
            validate_url(url)?;
        }
        Ok(())
    }
}

fn validate_name(name: &str) -> Result<(), Invalid> {
    if name.trim().is_empty() {
        return Err(Invalid("`name` must not be empty".to_owned()));
    }
    if name.trim() != name {
        return Err(Invalid(
            "`name` must not start or end with whitespace".to_owned(),
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Invalid(format!(
            "`name` is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Invalid(
            "`name` must not contain control characters".to_owned(),
        ));
    }
    Ok(())
}

fn validate_url(url: &str) -> Result<(), Invalid> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
        _ => {
            return Err(Invalid(
                "`url` must be an http:// or https:// URL with a host".to_owned(),
            ));
        }
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(Invalid(format!(
            "`url` is longer than {MAX_URL_CHARS} characters"
        )));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid(
            "`url` must not contain whitespace or control characters".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, url: &str) -> NewServer {
        NewServer {
            name: name.to_owned(),
            url: url.to_owned(),
        }
    }

    #[test]
    fn good_servers_pass() {
        assert_eq!(new("alpha", "http://10.0.0.1:8080/").validate(), Ok(()));
        assert_eq!(new("β-2", "https://b.example").validate(), Ok(()));
    }

    #[test]
    fn bad_names_and_urls_are_refused() {
        for (name, url) in [
            ("", "http://a"),
            ("  ", "http://a"),
            (" padded", "http://a"),
            ("tab\there", "http://a"),
            ("a", "ftp://a"),
            ("a", "http://"),
            ("a", "http:///path"),
            ("a", "http://a b"),
            ("a", "a.example"),
        ] {
            assert!(new(name, url).validate().is_err(), "{name:?} {url:?}");
        }
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        assert!(new(&long, "http://a").validate().is_err());
    }

    #[test]
    fn a_patch_needs_at_least_one_valid_field() {
        assert!(ServerPatch::default().validate().is_err());
        let url_only = ServerPatch {
            url: Some("http://b".to_owned()),
            ..ServerPatch::default()
        };
        assert_eq!(url_only.validate(), Ok(()));
        let bad_name = ServerPatch {
            name: Some(String::new()),
            ..ServerPatch::default()
        };
        assert!(bad_name.validate().is_err());
    }
}
