//! The rooms' figures: how many rooms and memberships there are, and what publishes did.

use prometheus::{IntCounter, IntGauge, Registry};

use super::register;

/// Counters and gauges of a server's rooms, updated where rooms change and publish.
pub(crate) struct RoomMetrics {
    pub(crate) rooms: IntGauge,
    pub(crate) memberships: IntGauge,
    pub(crate) publishes: IntCounter,
    pub(crate) deliveries: IntCounter,
    pub(crate) skipped: IntCounter,
    pub(crate) slow_closed: IntCounter,
}

impl RoomMetrics {
    pub(crate) fn new(registry: &Registry) -> RoomMetrics {
        let gauge = |name: &str, help: &str| register::gauge(registry, name, help);
        let counter = |name: &str, help: &str| register::counter(registry, name, help);
        RoomMetrics {
            rooms: gauge("kim_rooms", "Rooms with at least one member."),
            memberships: gauge(
                "kim_room_memberships",
                "Channels in rooms, counted once per room they are in.",
            ),
            publishes: counter("kim_room_publishes_total", "Publishes to a room."),
            deliveries: counter(
                "kim_room_deliveries_total",
                "Room members whose outbox took a published message.",
            ),
            skipped: counter(
                "kim_room_skipped_total",
                "Room members that missed a published message, their outbox full.",
            ),
            slow_closed: counter(
                "kim_room_slow_consumers_closed_total",
                "Room members closed because their outbox was full when the room published.",
            ),
        }
    }
}
