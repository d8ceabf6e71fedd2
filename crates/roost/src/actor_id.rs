//! Actor ids: 1-128 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
//!
//! The alphabet keeps ids safe inside store keys (no `0x00`), file names and URL paths; the
//! leading-dot rule rules out `.` and `..`.

use std::fmt;

/// Longest actor id, in bytes.
pub const ACTOR_ID_BYTES_MAX: usize = 128;

/// A validated actor id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActorId(String);

/// Why a string is not an actor id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidActorId {
    #[error("actor id is empty")]
    Empty,
    #[error("actor id is longer than {ACTOR_ID_BYTES_MAX} bytes")]
    TooLong,
    #[error("actor id must not start with '.'")]
    LeadingDot,
    #[error("actor id may contain only A-Z, a-z, 0-9, '.', '_' and '-'")]
    BadCharacter,
}

impl ActorId {
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidActorId> {
        let id = id.into();
        Self::validate(&id)?;
        Ok(Self(id))
    }

    pub fn validate(id: &str) -> Result<(), InvalidActorId> {
        if id.is_empty() {
            return Err(InvalidActorId::Empty);
        }
        if id.len() > ACTOR_ID_BYTES_MAX {
            return Err(InvalidActorId::TooLong);
        }
        if id.starts_with('.') {
            return Err(InvalidActorId::LeadingDot);
        }
        let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if !id.bytes().all(ok) {
            return Err(InvalidActorId::BadCharacter);
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ActorId {
    type Err = InvalidActorId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        for good in ["a", "task-1", "User_9.db", "x".repeat(128).as_str(), "a..b"] {
            assert!(ActorId::new(good).is_ok(), "{good}");
        }
        let cases = [
            ("", InvalidActorId::Empty),
            (".", InvalidActorId::LeadingDot),
            ("..", InvalidActorId::LeadingDot),
            ("a/b", InvalidActorId::BadCharacter),
            ("a%2Fb", InvalidActorId::BadCharacter),
            ("a b", InvalidActorId::BadCharacter),
            ("é", InvalidActorId::BadCharacter),
            ("a\0", InvalidActorId::BadCharacter),
        ];
        for (bad, why) in cases {
            assert_eq!(ActorId::new(bad), Err(why), "{bad:?}");
        }
        assert_eq!(ActorId::new("x".repeat(129)), Err(InvalidActorId::TooLong));
    }
}
