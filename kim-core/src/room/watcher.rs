//! Who hears of rooms coming and going.

/// Told when a room gets its first member and loses its last. Called under the rooms' locks:
/// it must not block or call back into the rooms.
pub(crate) trait RoomWatcher: Send + Sync + 'static {
    /// Room `room` got its first member.
    fn created(&self, room: &str);
    /// Room `room` lost its last member.
    fn dropped(&self, room: &str);
}
