//! The IPC benchmark's three variants deliver every message whole: each run must account for
//! exactly the messages and bytes sent (the receivers also check each message's length and
//! per-message stamps). These check function, not speed.

use kim_benchmark::ipc::{run_ceiling, run_kim, run_naive, IpcRun};

type Run = fn(usize, usize, usize, bool) -> anyhow::Result<IpcRun>;

const VARIANTS: [(&str, Run); 3] = [
    ("kim", run_kim),
    ("ceiling", run_ceiling),
    ("naive", run_naive),
];

fn check_all(count: usize, size: usize, chunk: usize) {
    for (name, run) in VARIANTS {
        let r = run(count, size, chunk, false).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(r.messages, count as u64, "{name}: messages");
        assert_eq!(r.bytes, (count * size) as u64, "{name}: bytes");
        assert!(r.elapsed_secs > 0.0, "{name}: elapsed");
        assert!(
            r.mb_per_sec.is_finite() && r.mb_per_sec > 0.0,
            "{name}: rate"
        );
    }
}

#[test]
fn large_messages_arrive_whole_in_every_variant() {
    // 200 KiB in 16 KiB chunks: 12.5 chunks, so the last one is short.
    check_all(50, 200 * 1024, 16 * 1024);
}

#[test]
fn single_datagram_messages_arrive_whole_in_every_variant() {
    check_all(200, 1000, 16 * 1024);
}

#[test]
fn datagram_counts_match_the_wire() {
    let (count, size, chunk): (usize, usize, usize) = (20, 100 * 1024, 16 * 1024);
    let chunks = size.div_ceil(chunk) as u64;
    // kim's wire opens a multi-datagram message with a header-only BEGIN.
    let kim = run_kim(count, size, chunk, false).unwrap();
    assert_eq!(kim.datagrams, count as u64 * (chunks + 1));
    let ceiling = run_ceiling(count, size, chunk, false).unwrap();
    assert_eq!(ceiling.datagrams, count as u64 * chunks);
}
