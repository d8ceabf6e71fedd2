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
                Some((s, p)) => (s.trim(), Some(p.trim().to_string())),
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

    /// Allows requests on actors whose ids start with `prefix` (an actor id, or a listing
    /// prefix).
    pub fn check_prefix(&self, headers: &HeaderMap, prefix: &str) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let token = Self::bearer(headers)?;
        if self.is_admin(token) {
            return Ok(());
        }
        let allowed = self.tokens.iter().filter(|t| same(&t.secret, token)).any(|t| match &t.prefix {
            None => true,
            Some(scope) => prefix.starts_with(scope.as_str()),
        });
        if allowed {
            Ok(())
        } else {
            Err(ApiError::unauthorized("the token does not grant access to this actor"))
        }
    }

    pub fn check_actor(&self, headers: &HeaderMap, id: &ActorId) -> Result<(), ApiError> {
        self.check_prefix(headers, id.as_str())
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
}
