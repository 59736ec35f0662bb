//! The `report` command: Markdown tables from the JSON (`--json`) of earlier runs, so that
//! results measured apart can be put in README.md together.

use std::path::PathBuf;

use anyhow::Context;

use crate::figures::{print_markdown, Figure};

/// Reads the figures of every file in `files` and prints them as Markdown tables.
pub(crate) fn run(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut figs: Vec<Figure> = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let doc: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON from --json", f.display()))?;
        let part: Vec<Figure> = serde_json::from_value(doc["figures"].clone())
            .with_context(|| format!("{} has no figures", f.display()))?;
        figs.extend(part);
    }
    print_markdown(&figs);
    Ok(())
}
