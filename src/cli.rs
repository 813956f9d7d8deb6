//! The command line (fixed in design.md); presentation only: every command is a library call.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::Result;
use crate::graph::GraphIndex;
use crate::onnx::load_model;
use crate::patterns::find_matches;
use crate::report;

#[derive(Parser, Debug)]
#[command(name = "adanorm-onnx", version, about = "Find LayerNorm subgraphs in ONNX models and rewrite them into AdaNorm / LayerNorm-simple")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List every LayerNorm-family subgraph (layernorm, lnsimple, adanorm, rmsnorm).
    Inspect {
        model: PathBuf,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a command; returns the process exit code on success.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Inspect { model, json } => {
            let loaded = load_model(&model)?;
            let g = GraphIndex::build(&loaded)?;
            let matches = find_matches(&g);
            let shown = model.display().to_string();
            if json {
                println!("{}", serde_json::to_string_pretty(&report::inspect_json(&shown, &g, &matches)).expect("JSON of plain values"));
            } else {
                print!("{}", report::inspect_table(&shown, &g, &matches));
            }
            Ok(0)
        }
    }
}
