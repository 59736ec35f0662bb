//! A session's token: what a client shows to resume its session.

use std::fmt;

/// A session's token: 128 bits from the operating system's random source, written as 32
/// lowercase hex digits. Unguessable, so a session is resumed only by the client it was given
/// to (and only after its acceptor logged it in again as the same id).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionToken([u8; 16]);

impl SessionToken {
    /// All zeros: the token of no session (a random one is never it, for practical purposes).
    pub(crate) const ZERO: SessionToken = SessionToken([0; 16]);

    /// A fresh token. The OS's random source failing is an unrecoverable fault of the
    /// machine (there is no safe token without it), so it panics.
    pub(crate) fn random() -> SessionToken {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        SessionToken(bytes)
    }

    /// Reads the 32 hex digits of a token (either case); `None` for anything else.
    pub fn parse(text: &str) -> Option<SessionToken> {
        let text = text.as_bytes();
        if text.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            bytes[i] = (hi * 16 + lo) as u8;
        }
        Some(SessionToken(bytes))
    }

    /// True if both are the same token, in time that does not depend on where they differ.
    pub(crate) fn matches(&self, other: &SessionToken) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A token is a credential: logs show its first digits only.
        write!(f, "SessionToken({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_read_back() {
        let a = SessionToken::random();
        let b = SessionToken::random();
        assert!(!a.matches(&b));
        let text = a.to_string();
        assert_eq!(text.len(), 32);
        assert!(SessionToken::parse(&text).unwrap().matches(&a));
        assert!(SessionToken::parse(&text.to_uppercase())
            .unwrap()
            .matches(&a));
        assert!(SessionToken::parse(&text[1..]).is_none());
        assert!(SessionToken::parse(&format!("{}g", &text[1..])).is_none());
        assert!(!format!("{a:?}").contains(&text));
    }
}
