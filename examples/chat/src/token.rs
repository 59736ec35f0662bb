//! Login tokens: the chat's page gets one for a user name, and the websocket upgrade carries it
//! in its query (`/ws?token=...`), where the upgrade hook checks it before anything else runs.
//!
//! A token is `<user>.<expiry>.<signature>`: the user name, the expiry in seconds since the Unix
//! epoch, and HMAC-SHA256 over `<user>.<expiry>` under the server's secret, in unpadded
//! URL-safe base64. Every part is URL-safe, so the token goes into a query as it is. Any node
//! with the same secret accepts it; nothing is stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The longest user name, in bytes.
pub const MAX_NAME: usize = 32;

/// Why a token was refused (or a name cannot have one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not three dot-separated parts with a number in the middle.
    Malformed,
    /// The signature does not match: forged, altered, or signed with another secret.
    Forged,
    /// The token's time is over.
    Expired,
    /// The user name is not 1 to 32 of `A-Z a-z 0-9 _ -`.
    BadName,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed token",
            TokenError::Forged => "token signature is invalid",
            TokenError::Expired => "token expired",
            TokenError::BadName => "user names are 1 to 32 letters, digits, '_' or '-'",
        })
    }
}

impl std::error::Error for TokenError {}

/// True for a name tokens can be issued for: short, and safe in URLs, JSON and HTML ids.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Issues and checks tokens under one secret.
#[derive(Clone)]
pub struct Tokens {
    mac: Hmac<Sha256>,
    ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("ttl", &self.ttl).finish()
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Tokens {
    /// Tokens signed with `secret` (any length; 32 random bytes is right), valid for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Tokens {
        Tokens {
            mac: Hmac::new_from_slice(secret).expect("HMAC takes a key of any length"),
            ttl,
        }
    }

    fn sign(&self, signed: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        mac
    }

    /// A token for `user`, valid from `now` for the configured time; returns it and its expiry
    /// in seconds since the epoch.
    pub fn issue(&self, user: &str, now: SystemTime) -> Result<(String, u64), TokenError> {
        if !valid_name(user) {
            return Err(TokenError::BadName);
        }
        let expiry = unix_seconds(now + self.ttl);
        let signed = format!("{user}.{expiry}");
        let tag = self.sign(&signed).finalize().into_bytes();
        Ok((format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag)), expiry))
    }

    /// The user a token names, if it is genuine and has not expired at `now`. The signature
    /// is compared in constant time.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<String, TokenError> {
        let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (user, expiry) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        self.sign(signed)
            .verify_slice(&tag)
            .map_err(|_| TokenError::Forged)?;
        if !valid_name(user) {
            return Err(TokenError::BadName);
        }
        if unix_seconds(now) >= expiry {
            return Err(TokenError::Expired);
        }
        Ok(user.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked() {
        let day = Duration::from_secs(86_400);
        let tokens = Tokens::new(b"secret one", day);
        let now = SystemTime::now();
        let (t, expiry) = tokens.issue("alice", now).unwrap();
        assert_eq!(expiry, unix_seconds(now) + 86_400);
        assert_eq!(tokens.verify(&t, now).as_deref(), Ok("alice"));
        assert_eq!(tokens.verify(&t, now + day), Err(TokenError::Expired));
        let other = Tokens::new(b"secret two", day);
        assert_eq!(other.verify(&t, now), Err(TokenError::Forged));
        // Another name, or a later expiry, under the same signature.
        let tag = t.rsplit_once('.').unwrap().1;
        let forged = format!("mallory.{expiry}.{tag}");
        assert_eq!(tokens.verify(&forged, now), Err(TokenError::Forged));
        let forged = format!("alice.{}.{tag}", expiry + 1);
        assert_eq!(tokens.verify(&forged, now), Err(TokenError::Forged));
        for bad in ["", "alice", "alice.1", "alice.x.AAAA", "alice.1.***"] {
            assert_eq!(tokens.verify(bad, now), Err(TokenError::Malformed), "{bad}");
        }
        for bad in ["", "a b", "a.b", &"x".repeat(33), "é"] {
            assert_eq!(tokens.issue(bad, now), Err(TokenError::BadName), "{bad:?}");
        }
    }
}
