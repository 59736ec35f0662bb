//! The figures of a run and how they are reported: each figure is one metric of one target
//! over the runs, with its median; they print as plain tables with the ratios to the
//! baselines, as Markdown tables (for README.md), or as JSON. Every command reports through
//! here, and the `report` command reads that JSON back, so the format lives in one place.

use crate::runner::{Bench, Options, Target};

/// The name of uWebSockets' row, whose ratio column shows only when it ran.
const UWS: &str = "uws";

/// One figure of one target over the runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Figure {
    /// The workload and its settings, e.g. `echo 100 x 20 B`.
    pub(crate) workload: String,
    /// What was measured, e.g. `messages per second`.
    pub(crate) metric: String,
    /// Whether more is better.
    pub(crate) higher_is_better: bool,
    /// The target's name.
    pub(crate) target: String,
    /// The figure of each run, in order.
    pub(crate) runs: Vec<f64>,
    /// The median of `runs`.
    pub(crate) median: f64,
}

/// The median of `v` (NaN when empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Adds to `out` one figure per target of `results`: `get` of each run.
pub(crate) fn collect<T>(
    out: &mut Vec<Figure>,
    workload: &str,
    metric: &str,
    higher_is_better: bool,
    results: &[(Target, Vec<T>)],
    get: impl Fn(&T) -> f64,
) {
    let named = results.iter().map(|(t, runs)| (t.name(), runs.as_slice()));
    collect_named(out, workload, metric, higher_is_better, named, get);
}

/// [`collect`] for rows that are not servers under test (the `cluster` command's cases, such
/// as `same-node` and `cross-node`), named as given.
pub(crate) fn collect_named<'a, T: 'a>(
    out: &mut Vec<Figure>,
    workload: &str,
    metric: &str,
    higher_is_better: bool,
    results: impl IntoIterator<Item = (String, &'a [T])>,
    get: impl Fn(&T) -> f64,
) {
    for (target, runs) in results {
        let v: Vec<f64> = runs.iter().map(&get).collect();
        out.push(Figure {
            workload: workload.into(),
            metric: metric.into(),
            higher_is_better,
            target,
            median: median(&v),
            runs: v,
        });
    }
}

/// The metrics of `figs`, each once, in the order they first appear.
pub(crate) fn metrics(figs: &[Figure]) -> Vec<&str> {
    let mut metrics: Vec<&str> = Vec::new();
    for f in figs {
        if !metrics.contains(&f.metric.as_str()) {
            metrics.push(&f.metric);
        }
    }
    metrics
}

/// Every run's result of every target, as JSON keyed by the target's name.
pub(crate) fn detail<T: serde::Serialize + Clone>(res: &[(Target, Vec<T>)]) -> serde_json::Value {
    serde_json::Value::Object(
        res.iter()
            .map(|(t, v)| (t.name(), serde_json::to_value(v).unwrap_or_default()))
            .collect(),
    )
}

/// The report of the workloads compared with the baselines: JSON (`--json`), Markdown
/// (`--markdown`), or a line about the machine and a table per workload and metric.
pub(crate) fn print_results(
    opts: &Options,
    bench: &Bench,
    figs: &[Figure],
    details: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let (cpus, pin) = (opts.cpus, opts.pin);
    if opts.json {
        let doc = serde_json::json!({
            "machine": { "cpus": cpus, "pinned": pin, "server_threads": bench.threads },
            "runs": bench.runs,
            "figures": figs,
            "details": details,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if opts.markdown {
        print_markdown(figs);
    } else {
        println!(
            "machine: {cpus} cpus; server {} (runtime threads {}); {} runs per target, medians",
            if pin {
                "pinned to cpu 0, load generator to cpu 1"
            } else {
                "unpinned"
            },
            bench.threads,
            bench.runs
        );
        print_table(figs);
    }
    Ok(())
}

/// `value / base` as a table cell (`1.23x`), or `-` without a base.
pub(crate) fn ratio(value: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b != 0.0 => format!("{:.2}x", value / b),
        _ => "-".into(),
    }
}

/// Every run's figure, as the tables list them.
pub(crate) fn runs(runs: &[f64]) -> Vec<String> {
    runs.iter().map(|r| format!("{r:.1}")).collect()
}

/// One table per workload and metric: a row per target with its median, its ratios to
/// tokio-tungstenite in its two configurations, to uWebSockets (only when it ran, so that
/// tables without it stay as they were) and (for `-dgram` targets) to kim in-process, and
/// every run.
pub(crate) fn print_table(figs: &[Figure]) {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for f in figs {
        if !groups.contains(&(f.workload.as_str(), f.metric.as_str())) {
            groups.push((&f.workload, &f.metric));
        }
    }
    for (workload, metric) in groups {
        let rows: Vec<&Figure> = figs
            .iter()
            .filter(|f| f.workload == workload && f.metric == metric)
            .collect();
        let base = |name: &str| rows.iter().find(|f| f.target == name).map(|f| f.median);
        let width = rows
            .iter()
            .map(|f| f.target.len())
            .max()
            .unwrap_or(0)
            .max(16);
        // With `--compare-bin-dir`, each of kim's targets also against the other build.
        let compared = rows.iter().any(|f| f.target.ends_with("-compare"));
        let uws = base(UWS);
        println!("\n{workload}: {metric}");
        println!(
            "  {:<width$} {:>14} {:>10} {:>10}{} {:>8}{}   runs",
            "target",
            "median",
            "/tung",
            "/tung-4k",
            if uws.is_some() { "       /uws" } else { "" },
            "/inproc",
            if compared { "   /compare" } else { "" }
        );
        for f in &rows {
            let ratio = |b: Option<f64>| ratio(f.median, b);
            let runs = runs(&f.runs);
            let inproc = match f.target.strip_suffix("-dgram") {
                Some(kim) => ratio(base(kim)),
                None => "-".into(),
            };
            let compare = if compared {
                let other = base(&format!("{}-compare", f.target));
                format!(" {:>10}", ratio(other))
            } else {
                String::new()
            };
            let to_uws = match uws {
                Some(_) => format!(" {:>10}", ratio(uws)),
                None => String::new(),
            };
            println!(
                "  {:<width$} {:>14.1} {:>10} {:>10}{} {:>8}{}   {}",
                f.target,
                f.median,
                ratio(base("tungstenite")),
                ratio(base("tungstenite-4k")),
                to_uws,
                inproc,
                compare,
                runs.join(" ")
            );
        }
    }
}

/// One Markdown table per workload: a row per target, a column per metric (median), then for
/// kim's rows the ratios to tokio-tungstenite in its two configurations and to uWebSockets
/// (when it ran; the table's caption names the ratios).
pub(crate) fn print_markdown(figs: &[Figure]) {
    let mut workloads: Vec<&str> = Vec::new();
    for f in figs {
        if !workloads.contains(&f.workload.as_str()) {
            workloads.push(&f.workload);
        }
    }
    for w in workloads {
        let of_w: Vec<&Figure> = figs.iter().filter(|f| f.workload == w).collect();
        let mut metrics: Vec<&str> = Vec::new();
        let mut targets: Vec<&str> = Vec::new();
        for f in &of_w {
            if !metrics.contains(&f.metric.as_str()) {
                metrics.push(&f.metric);
            }
            if !targets.contains(&f.target.as_str()) {
                targets.push(&f.target);
            }
        }
        let get = |t: &str, m: &str| of_w.iter().find(|f| f.target == t && f.metric == m);
        let bases: Vec<&str> = ["tungstenite", "tungstenite-4k", UWS]
            .into_iter()
            .filter(|b| targets.contains(b))
            .collect();
        if targets.contains(&UWS) {
            println!("\n**{w}** (medians; kim / {})\n", bases.join(" / "));
        } else {
            println!("\n**{w}** (medians)\n");
        }
        let mut header = String::from("| target |");
        let mut rule = String::from("|---|");
        for m in &metrics {
            header.push_str(&format!(" {m} |"));
            rule.push_str("---|");
        }
        println!("{header}\n{rule}");
        for t in &targets {
            let mut row = format!("| {t} |");
            for m in &metrics {
                let cell = match get(t, m) {
                    Some(f) => {
                        let base = |b: &str| get(b, m).map(|x| x.median).filter(|v| *v != 0.0);
                        let mut c = format_value(f.median);
                        if t.starts_with("kim") {
                            let r: Vec<String> = bases
                                .iter()
                                .filter_map(|b| base(b))
                                .map(|b| format!("{:.2}x", f.median / b))
                                .collect();
                            if !r.is_empty() {
                                c.push_str(&format!(" ({})", r.join(" / ")));
                            }
                        }
                        c
                    }
                    None => "-".into(),
                };
                row.push_str(&format!(" {cell} |"));
            }
            println!("{row}");
        }
    }
}

/// A median for a Markdown cell: whole and with thousands separators from 100 up, one
/// decimal below.
pub(crate) fn format_value(v: f64) -> String {
    if v >= 100.0 {
        let n = v.round() as u64;
        let s = n.to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else {
        format!("{v:.1}")
    }
}
