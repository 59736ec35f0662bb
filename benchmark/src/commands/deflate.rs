//! The `deflate` command: the deflate crates side by side on chat-like JSON, each message
//! compressed and inflated on its own (`kim_benchmark::deflate`), and the memory of one
//! compressor or decompressor of each. No servers are started; the process pins itself to
//! CPU 1 when pinning.

use kim_benchmark::deflate::{self, chat_messages, Codec, CodecRun, State};

use crate::figures::{collect_named, median, print_markdown, Figure};
use crate::runner::Options;

/// The `deflate` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Message sizes in bytes; repeat for several [default: 100, 200, 500, 1024, 4096, 16384].
    #[arg(long)]
    pub(crate) size: Vec<usize>,
    /// Different messages of each size.
    #[arg(long, default_value_t = 200)]
    pub(crate) messages: usize,
    /// Bytes compressed per codec and run (rounds over the messages make it up).
    #[arg(long, default_value_t = 4 << 20)]
    pub(crate) bytes: usize,
    /// Deflate levels to run each codec at; repeat for several [default: 6, 1].
    #[arg(long)]
    pub(crate) level: Vec<u8>,
}

/// Runs every size, codec and level `--runs` times, alternating, then measures the memory of
/// each state once, and reports.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    if opts.pin {
        kim_benchmark::proc::pin_current_process(1)?;
    }
    let sizes = if args.size.is_empty() {
        vec![100, 200, 500, 1024, 4096, 16384]
    } else {
        args.size.clone()
    };
    anyhow::ensure!(args.messages >= 1, "--messages must be at least 1");
    let levels = if args.level.is_empty() {
        vec![6, 1]
    } else {
        args.level.clone()
    };
    anyhow::ensure!(
        levels.iter().all(|l| (1..=9).contains(l)),
        "--level is 1 to 9"
    );
    let mut figs = Vec::new();
    for &size in &sizes {
        let messages = chat_messages(size, args.messages);
        let total: usize = messages.iter().map(Vec::len).sum();
        let rounds = (args.bytes / total.max(1)).max(1);
        let mut res: Vec<(String, Vec<CodecRun>)> = Vec::new();
        for codec in Codec::ALL {
            for &level in &levels {
                res.push((format!("{} L{level}", codec.name()), Vec::new()));
            }
        }
        for run in 0..opts.runs {
            eprintln!("deflate {size} B: run {} of {}", run + 1, opts.runs);
            let mut i = 0;
            for codec in Codec::ALL {
                for &level in &levels {
                    res[i].1.push(deflate::run(codec, level, &messages, rounds));
                    i += 1;
                }
            }
        }
        let label = format!("deflate, chat JSON of {size} B, each message alone");
        let named = || res.iter().map(|(n, r)| (n.clone(), r.as_slice()));
        collect_named(&mut figs, &label, "payload bytes", false, named(), |r| {
            r.compressed_bytes
        });
        collect_named(&mut figs, &label, "of the original", false, named(), |r| {
            r.compressed_bytes / r.message_bytes
        });
        collect_named(&mut figs, &label, "compress ns", false, named(), |r| {
            r.compress_ns
        });
        collect_named(&mut figs, &label, "inflate ns", false, named(), |r| {
            r.inflate_ns
        });
        let plain = res[0].1.first().map_or(f64::NAN, |r| r.message_bytes);
        figs.push(Figure {
            workload: label,
            metric: "payload bytes".into(),
            higher_is_better: false,
            target: "uncompressed".into(),
            runs: vec![plain],
            median: plain,
        });
    }
    // The memory of each state once it has handled a 1 KiB message.
    let sample = chat_messages(1024, 1).remove(0);
    for state in State::ALL {
        let bytes = deflate::state_bytes(state, &sample, 256);
        figs.push(Figure {
            workload: "deflate state, resident after one 1 KiB message".into(),
            metric: "bytes".into(),
            higher_is_better: false,
            target: state.name(),
            runs: vec![bytes],
            median: median(&[bytes]),
        });
    }
    if opts.json {
        let doc = serde_json::json!({ "runs": opts.runs, "figures": figs });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_markdown(&figs);
    }
    Ok(())
}
