//! Room names: what a room may be called.

use crate::error::PushError;

/// The longest room name, in bytes.
pub const MAX_ROOM_NAME: usize = 64;

/// Checks a room name: 1 to [`MAX_ROOM_NAME`] bytes of UTF-8 with no whitespace or control
/// characters (names travel in text protocols, separated by spaces).
pub fn check_room_name(name: &str) -> Result<(), PushError> {
    if name.is_empty()
        || name.len() > MAX_ROOM_NAME
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(PushError::BadRoomName);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_short_utf8_without_spaces() {
        assert!(check_room_name("general").is_ok());
        assert!(check_room_name("équipe-∂").is_ok());
        assert!(check_room_name(&"r".repeat(MAX_ROOM_NAME)).is_ok());
        for bad in [
            "",
            "a b",
            "a\tb",
            "a\nb",
            "a\u{0}b",
            &"r".repeat(MAX_ROOM_NAME + 1),
        ] {
            assert_eq!(check_room_name(bad), Err(PushError::BadRoomName), "{bad:?}");
        }
        let said = PushError::BadRoomName.to_string();
        assert!(
            said.contains(&format!("1 to {MAX_ROOM_NAME} bytes")),
            "{said}"
        );
    }
}
