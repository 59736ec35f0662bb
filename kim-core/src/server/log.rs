//! The log target of the server's parts.

/// The target of every event the server's parts log, whichever file they are in: one name to
/// filter on (`RUST_LOG=kim_core::server=debug`) and to read in the logs.
pub(crate) const TARGET: &str = "kim_core::server";
