//! The log target of the server's parts.

/// The target of every event the server's parts log, whichever file they are in: one name to
/// filter on (`RUST_LOG=kim_core::server=debug`) and to read in the logs.
pub(crate) const TARGET: &str = "kim_core::server";

/// The target of each channel's span (`channel{id, peer, transport}`), at debug: a subscriber
/// enables it alone with `RUST_LOG=info,kim::channel=debug`, and then every line logged for a
/// channel, the app's included, carries its id, peer and transport.
pub(crate) const CHANNEL_SPAN: &str = "kim::channel";
