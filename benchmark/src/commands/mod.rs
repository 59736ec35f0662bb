//! The subcommands, one module each: what a command runs and how it reports it. `main` parses
//! the command line and hands each command its settings here; what the commands share (the
//! servers under test, the runs, the figures and their tables) is in `crate::runner` and
//! `crate::figures`. These modules are the binary's, apart from the library's workloads of the
//! same names (`commands::ipc` runs and reports `kim_benchmark::ipc`, and so on).

pub(crate) mod broadcast;
pub(crate) mod cluster;
pub(crate) mod deflate;
pub(crate) mod echo;
pub(crate) mod fanout;
pub(crate) mod ipc;
pub(crate) mod large;
pub(crate) mod loadtest;
pub(crate) mod membership;
pub(crate) mod overhead;
pub(crate) mod parallel;
pub(crate) mod pipelined;
pub(crate) mod report;
pub(crate) mod roundtrip;
pub(crate) mod sessions;
pub(crate) mod slow_consumers;
