//! Bearer tokens: each optionally scoped to an actor-id prefix, plus an admin token for admin
//! and debug endpoints. With no token configured everything is open (the server then refuses
//! to listen beyond loopback).

use axum::http::{header, HeaderMap};

use super::error::ApiError;
use crate::actor_id::ActorId;

/// One accepted token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub secret: String,
    /// Only actors whose id starts with this prefix (all when `None`).
    pub prefix: Option<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// The server's tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub tokens: Vec<Token>,
    pub admin: Option<String>,
}

/// Characters that end a segment of an actor id.
const SEPARATORS: [char; 3] = ['-', '.', '_'];

/// A token's scope covers the id equal to it and the ids that continue it after a segment
/// boundary: `team-1` covers `team-1` and `team-1-x`, not `team-10-x`; `team-1-` covers
/// `team-1-x`.
pub fn scope_covers(scope: &str, id: &str) -> bool {
    match id.strip_prefix(scope) {
        Some("") => true,
        Some(rest) => scope.ends_with(SEPARATORS) || rest.starts_with(SEPARATORS),
        None => false,
    }
}

/// A token's scope as written after `TOKEN:`: not empty (that would grant every actor) and
/// made of actor-id characters.
fn checked_scope(scope: &str) -> Result<String, String> {
    if scope.is_empty() {
        return Err(
            "a token's actor prefix is empty (TOKEN: grants nothing): write TOKEN alone for all actors, \
                    or TOKEN:PREFIX"
                .into(),
        );
    }
    if !scope.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
        return Err(format!("token prefix {scope:?} holds characters that no actor id has"));
    }
    Ok(scope.to_string())
}

/// Compares without an early exit, so timing does not reveal a matching prefix.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// Parses tokens: one per line or comma-separated, each `TOKEN` or `TOKEN:PREFIX`; blank
    /// lines and `#` comments are skipped.
    pub fn parse_tokens(text: &str) -> Result<Vec<Token>, String> {
        let mut tokens = Vec::new();
        for item in text.lines().flat_map(|l| l.split(',')).map(str::trim) {
            if item.is_empty() || item.starts_with('#') {
                continue;
            }
            let (secret, prefix) = match item.split_once(':') {
                Some((s, p)) => (s.trim(), Some(checked_scope(p.trim())?)),
                None => (item, None),
            };
            if secret.len() < 16 {
                return Err("every token must be at least 16 characters long".into());
            }
            tokens.push(Token { secret: secret.to_string(), prefix });
        }
        Ok(tokens)
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty() && self.admin.is_none()
    }

    fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let value = value.to_str().map_err(|_| ApiError::unauthorized("malformed authorization header"))?;
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "));
        token.map(str::trim).ok_or_else(|| ApiError::unauthorized("expected 'Authorization: Bearer <token>'"))
    }

    fn is_admin(&self, token: &str) -> bool {
        self.admin.as_deref().is_some_and(|admin| same(admin, token))
    }

    /// Allows a listing of the ids that start with `prefix` when the token's scope is a prefix
    /// of it; ids the scope does not cover (`team-10` under `team-1`) must still be filtered
    /// with [`Self::allows`].
    pub fn check_prefix(&self, headers: &HeaderMap, prefix: &str) -> Result<(), ApiError> {
        self.check(headers, |scope| prefix.starts_with(scope))
    }

    /// Does the request's token cover `id`? (No error detail: for filtering listings.)
    pub fn allows(&self, headers: &HeaderMap, id: &ActorId) -> bool {
        self.check_actor(headers, id).is_ok()
    }

    fn check(&self, headers: &HeaderMap, covers: impl Fn(&str) -> bool) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let token = Self::bearer(headers)?;
        if self.is_admin(token) {
            return Ok(());
        }
        let allowed = self.tokens.iter().filter(|t| same(&t.secret, token)).any(|t| match &t.prefix {
            None => true,
            Some(scope) => covers(scope),
        });
        if allowed {
            Ok(())
        } else {
            Err(ApiError::unauthorized("the token does not grant access to this actor"))
        }
    }

    pub fn check_actor(&self, headers: &HeaderMap, id: &ActorId) -> Result<(), ApiError> {
        self.check(headers, |scope| scope_covers(scope, id.as_str()))
    }

    /// [`Self::check_admin`], also accepting the admin token from a query parameter: a browser
    /// opening the dashboard has no way to send a header.
    pub fn check_admin_or_query(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<(), ApiError> {
        match query_token {
            Some(token) if self.is_admin(token) => Ok(()),
            _ => self.check_admin(headers),
        }
    }

    pub fn check_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let token = Self::bearer(headers)?;
        if self.is_admin(token) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("this endpoint needs the admin token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_scope() {
        let tokens =
            Auth::parse_tokens("# comment\naaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbb:team-1-, cccccccccccccccc")
                .unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens[1].prefix.as_deref(), Some("team-1-"));
        assert!(Auth::parse_tokens("short").is_err());
        let auth = Auth { tokens, admin: Some("adminadminadminadmin".into()) };
        let with = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
            h
        };
        let id = ActorId::new("team-1-x").unwrap();
        let other = ActorId::new("team-2-x").unwrap();
        assert!(auth.check_actor(&with("bbbbbbbbbbbbbbbb"), &id).is_ok());
        assert!(auth.check_actor(&with("bbbbbbbbbbbbbbbb"), &other).is_err());
        assert!(auth.check_actor(&with("aaaaaaaaaaaaaaaa"), &other).is_ok());
        assert!(auth.check_actor(&HeaderMap::new(), &id).is_err());
        assert!(auth.check_actor(&with("wrongwrongwrongwrong"), &id).is_err());
        assert!(auth.check_admin(&with("aaaaaaaaaaaaaaaa")).is_err());
        assert!(auth.check_admin(&with("adminadminadminadmin")).is_ok());
        assert!(Auth::default().check_admin(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn scopes_end_at_segment_boundaries() {
        assert!(Auth::parse_tokens("aaaaaaaaaaaaaaaa:").is_err(), "an empty prefix is refused");
        assert!(Auth::parse_tokens("aaaaaaaaaaaaaaaa: ").is_err());
        assert!(Auth::parse_tokens("aaaaaaaaaaaaaaaa:a/b").is_err());
        let tokens = Auth::parse_tokens("aaaaaaaaaaaaaaaa:team-1").unwrap();
        let auth = Auth { tokens, admin: None };
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer aaaaaaaaaaaaaaaa".parse().unwrap());
        let allowed = |id: &str| auth.check_actor(&headers, &ActorId::new(id).unwrap()).is_ok();
        for id in ["team-1", "team-1-x", "team-1.db", "team-1_a"] {
            assert!(allowed(id), "{id}");
        }
        for id in ["team-10", "team-10-x", "team-1x", "team-", "team"] {
            assert!(!allowed(id), "{id}");
        }
        assert!(scope_covers("team-1-", "team-1-x"));
        assert!(!scope_covers("team-1-", "team-1"));
        assert!(auth.check_prefix(&headers, "team-1").is_ok(), "listing is filtered afterwards");
        assert!(auth.check_prefix(&headers, "team-").is_err());
    }
}
