//! The command line (documented in README.md); presentation only: every command is a library call.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use std::path::Path;

use crate::error::{Error, Result};
use crate::graph::GraphIndex;
use crate::onnx::{load_model, save_model};

use crate::patterns::Family;
use crate::report;
use crate::rewrite::{self, weights::WeightsFile, Affine, Options, Outcome, Target};

#[derive(Parser, Debug)]
#[command(
    name = "adanorm-onnx",
    version,
    about = "Find LayerNorm subgraphs in ONNX models and rewrite them into AdaNorm / LayerNorm-simple"
)]
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
    /// Replace each decomposed LayerNorm / LayerNorm-simple / AdaNorm by one ai.adanorm node
    /// computing the same function (fused LayerNormalization nodes stay).
    Fuse {
        model: PathBuf,
        /// Output model (default: <stem>.fused.onnx beside the input).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
        /// Add model-local function bodies so runtimes without our library run the model.
        #[arg(long)]
        portable: bool,
        /// Change only matches of these families (as `inspect` names them), e.g.
        /// `--only adanorm,lnsimple` to leave plain LayerNorms to the runtime's own fusions.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<OnlyFamily>,
        /// Keep the residual `Add`s (and bias `Add`s) in front of each norm as they are, with
        /// version-1 nodes, instead of absorbing them into version-2 nodes (Skip, Bias, Sum).
        #[arg(long)]
        no_residual: bool,
        /// Print what was done as one JSON object instead of text (the Python API's report).
        #[arg(long)]
        json: bool,
    },
    /// Replace every LayerNorm-family match (fused or not) by AdaNorm or LayerNorm-simple.
    Rewrite {
        model: PathBuf,
        /// Output model (default: <stem>.adanorm.onnx beside the input).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long)]
        force: bool,
        /// The op each match becomes.
        #[arg(long, value_enum, default_value = "adanorm")]
        to: To,
        /// AdaNorm's C (default: the match's own when it is an AdaNorm, else 1.0).
        #[arg(long)]
        c: Option<f64>,
        /// AdaNorm's k (default: the match's own when it is an AdaNorm, else 0.1).
        #[arg(long)]
        k: Option<f64>,
        /// What happens to gain and bias.
        #[arg(long, value_enum, default_value = "keep")]
        affine: AffineArg,
        /// Where dropped or folded weights go (default: beside the output, <output stem>.weights.safetensors).
        #[arg(long)]
        weights_out: Option<PathBuf>,
        /// Add model-local function bodies so runtimes without our library run the model.
        #[arg(long)]
        portable: bool,
        /// Change only matches of these families (as `inspect` names them), e.g. `--only layernorm`.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<OnlyFamily>,
        /// Keep the residual `Add`s (and bias `Add`s) in front of each norm as they are, with
        /// version-1 nodes, instead of absorbing them into version-2 nodes (Skip, Bias, Sum).
        #[arg(long)]
        no_residual: bool,
        /// Print what was done as one JSON object instead of text (the Python API's report).
        #[arg(long)]
        json: bool,
    },
    /// Run a model in tract (with the ai.adanorm ops) and write its outputs.
    Run {
        model: PathBuf,
        /// Inputs as .npz (keys = graph input names).
        #[arg(long)]
        inputs: PathBuf,
        /// Outputs .npz (default: <stem>.outputs.npz beside the model).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run two models on the same inputs and compare every output; exit 1 above the tolerance.
    Verify {
        a: PathBuf,
        b: PathBuf,
        /// Inputs as .npz (default: random ones of the declared shapes).
        #[arg(long)]
        inputs: Option<PathBuf>,
        /// Largest allowed |a - b| / max(1, |b|) (default: 1e-4; 1e-2 for float16 outputs, as
        /// ops-spec allows).
        #[arg(long)]
        tolerance: Option<f64>,
        /// Size of a dynamic dimension for random inputs, e.g. --dim batch=4 (repeatable).
        #[arg(long = "dim", value_parser = parse_dim)]
        dims: Vec<(String, usize)>,
    },
    /// Turn ai.adanorm nodes back into standard ONNX.
    Revert {
        model: PathBuf,
        /// Output model (default: <stem>.reverted.onnx beside the input).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long)]
        force: bool,
        /// The weights file a `rewrite --affine drop|fold` wrote.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Print what was done as one JSON object instead of text (the Python API's report).
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum To {
    Adanorm,
    Simple,
}

/// The families `--only` offers, named as `inspect` prints them (RMSNorm is never rewritten).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OnlyFamily {
    #[value(name = "layernorm")]
    LayerNorm,
    #[value(name = "lnsimple")]
    LnSimple,
    #[value(name = "adanorm")]
    AdaNorm,
}

impl From<OnlyFamily> for Family {
    fn from(f: OnlyFamily) -> Family {
        match f {
            OnlyFamily::LayerNorm => Family::LayerNorm,
            OnlyFamily::LnSimple => Family::LnSimple,
            OnlyFamily::AdaNorm => Family::AdaNorm,
        }
    }
}

/// `--affine`: what happens to gain and bias.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum AffineArg {
    Keep,
    Fold,
    Drop,
}

impl From<AffineArg> for Affine {
    fn from(a: AffineArg) -> Affine {
        match a {
            AffineArg::Keep => Affine::Keep,
            AffineArg::Fold => Affine::Fold,
            AffineArg::Drop => Affine::Drop,
        }
    }
}

fn families(only: Vec<OnlyFamily>) -> Vec<Family> {
    only.into_iter().map(Family::from).collect()
}

fn parse_dim(s: &str) -> std::result::Result<(String, usize), String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    let value = value
        .parse()
        .map_err(|_| format!("'{value}' is not a size"))?;
    Ok((name.to_string(), value))
}

/// `<dir>/<stem><suffix>` beside `input`.
fn beside(input: &Path, suffix: &str) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    input.with_file_name(format!("{stem}{suffix}"))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn print_outcome(verb: &str, input: &Path, out: &Path, weights: Option<&Path>, o: &Outcome) {
    if let Some(path) = weights {
        println!("weights removed from the model -> {}", path.display());
    }
    println!("{verb} {} -> {}", input.display(), out.display());
    for c in &o.changes {
        println!(
            "  {}\n    -> {}   [{}]",
            c.before,
            c.after,
            if c.same_function {
                "same function"
            } else {
                "changes the function"
            }
        );
        if let Some(n) = &c.note {
            println!("    note: {n}");
        }
    }
    for (what, why) in &o.skipped {
        println!("  left as is: {what}\n    because {why}");
    }
    println!(
        "{} replaced, {} left as is; the model {}",
        o.changes.len(),
        o.skipped.len(),
        if o.same_function() {
            "computes the same function as before"
        } else {
            "no longer computes the same function (by request)"
        }
    );
}

/// Saves the model and its weights file (weights first: a model never points at weights that
/// are not there).
fn write_outcome(
    input: &Path,
    out: &Path,
    force: bool,
    weights_out: Option<PathBuf>,
    o: &Outcome,
) -> Result<Option<PathBuf>> {
    if same_file(input, out) {
        return Err(
            Error::msg("the output would replace the input model; choose another -o")
                .in_file(input),
        );
    }
    if out.exists() && !force {
        return Err(Error::msg("the output file exists (use --force to replace it)").in_file(out));
    }
    // External-data locations are relative to the model: they only stay valid beside it.
    if crate::onnx::external::uses_external_data(&o.model) {
        let dir = |p: &Path| {
            p.parent()
                .map(|d| {
                    if d.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        d
                    }
                })
                .and_then(|d| d.canonicalize().ok())
        };
        if dir(input) != dir(out) {
            return Err(Error::msg(format!(
                "the model keeps weights in external data files relative to its directory; write the output into that directory ({})",
                input.parent().map(|d| d.display().to_string()).unwrap_or_default()
            ))
            .in_file(out));
        }
    }
    let Some(w) = &o.weights else {
        return save_model(&o.model, out, force).map(|()| None);
    };
    let path = weights_out.unwrap_or_else(|| beside(out, ".weights.safetensors"));
    if same_file(input, &path) || same_file(out, &path) || path == out {
        return Err(Error::msg(
            "the weights file would replace a model; choose another --weights-out",
        )
        .in_file(&path));
    }
    let existed = path.exists();
    w.save(&path, force)?;
    if let Err(e) = save_model(&o.model, out, force) {
        // A weights file without its model is half an output: take back what we created.
        if !existed {
            let _ = std::fs::remove_file(&path);
        }
        return Err(e);
    }
    Ok(Some(path))
}

/// Loads a model for `inspect`/`fuse`/`rewrite`, with the calls of model-local functions that
/// hold a LayerNorm inlined (`patterns::functions`); also returns those functions' names.
fn load_for_matching(path: &Path) -> Result<(crate::onnx::Model, Vec<String>)> {
    crate::patterns::local_functions::inline_functions_with_matches(load_model(path)?)
}

fn print_inlined(inlined: &[String]) {
    if !inlined.is_empty() {
        println!(
            "note: the calls of model-local function(s) {} were inlined to reach the \
             normalisations inside them",
            inlined.join(", ")
        );
    }
}

/// Runs a command; returns the process exit code on success.
pub fn run(cli: Cli) -> Result<i32> {
    let (code, report) = execute(cli)?;
    if let Some(report) = report {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("JSON of plain values")
        );
    }
    Ok(code)
}

/// Runs a command; returns the exit code and, for `--json`, the report instead of printing it
/// (the Python API's entry). Without `--json` the command prints its text as `run` does.
pub fn execute(cli: Cli) -> Result<(i32, Option<serde_json::Value>)> {
    match cli.command {
        Command::Inspect { model, json } => {
            let (loaded, inlined) = load_for_matching(&model)?;
            let g = GraphIndex::build(&loaded)?;
            let subgraphs = g.subgraphs()?;
            let found = crate::patterns::find_matches_everywhere(&g, &subgraphs);
            let shown = model.display().to_string();
            if json {
                let mut report = report::inspect_json(&shown, &found);
                report["inlined_functions"] = serde_json::json!(inlined);
                return Ok((0, Some(report)));
            }
            print!("{}", report::inspect_table(&shown, &found));
            print_inlined(&inlined);
            Ok((0, None))
        }
        Command::Fuse {
            model,
            output,
            force,
            portable,
            only,
            no_residual,
            json,
        } => {
            let (loaded, inlined) = load_for_matching(&model)?;
            let g = GraphIndex::build(&loaded)?;
            let opts = Options {
                target: Target::Same,
                c: None,
                k: None,
                affine: Affine::Keep,
                portable,
                include_fused: false,
                only: families(only),
                residual: !no_residual,
            };
            let o = rewrite::plan::plan_model(&g, &opts).map_err(|e| e.in_file(&model))?;
            let out = output.unwrap_or_else(|| beside(&model, ".fused.onnx"));
            write_outcome(&model, &out, force, None, &o)?;
            finish(json, "fuse", &model, &out, None, &o, &inlined)
        }
        Command::Rewrite {
            model,
            output,
            force,
            to,
            c,
            k,
            affine,
            weights_out,
            portable,
            only,
            no_residual,
            json,
        } => {
            let (loaded, inlined) = load_for_matching(&model)?;
            let g = GraphIndex::build(&loaded)?;
            let target = match to {
                To::Adanorm => Target::AdaNorm,
                To::Simple => Target::Simple,
            };
            for (name, v) in [("--c", c), ("--k", k)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    return Err(Error::msg(format!("{name} must be a finite number")));
                }
            }
            let opts = Options {
                target,
                c,
                k,
                affine: affine.into(),
                portable,
                include_fused: true,
                only: families(only),
                residual: !no_residual,
            };
            let o = rewrite::plan::plan_model(&g, &opts).map_err(|e| e.in_file(&model))?;
            let out = output.unwrap_or_else(|| beside(&model, ".adanorm.onnx"));
            // Beside the output (never the input's folder unless the output is there too).
            let weights = write_outcome(&model, &out, force, weights_out, &o)?;
            finish(
                json,
                "rewrite",
                &model,
                &out,
                weights.as_deref(),
                &o,
                &inlined,
            )
        }
        Command::Run {
            model,
            inputs,
            output,
        } => {
            let given = crate::npz::read_npz(&inputs)?;
            let outputs = crate::runner::run(&model, given)?;
            let out = output.unwrap_or_else(|| beside(&model, ".outputs.npz"));
            crate::npz::write_npz(&out, &outputs)?;
            for (name, t) in &outputs {
                println!("{name}: {:?} {:?}", t.datum_type(), t.shape());
            }
            println!("wrote {}", out.display());
            Ok((0, None))
        }
        Command::Verify {
            a,
            b,
            inputs,
            tolerance,
            dims,
        } => {
            let given = match &inputs {
                Some(p) => crate::npz::read_npz(p)?,
                None => crate::runner::random_inputs(&a, &dims.into_iter().collect(), 0x5eed)?,
            };
            let out_a = crate::runner::run(&a, given.clone())?;
            let out_b = crate::runner::run(&b, given)?;
            let diffs = crate::runner::compare(&out_a, &out_b);
            let half = out_a
                .iter()
                .any(|(_, t)| t.datum_type() == adanorm_tract::tract_onnx::prelude::DatumType::F16);
            let tolerance = tolerance.unwrap_or(if half { 1e-2 } else { 1e-4 });
            let mut ok = true;
            for d in &diffs {
                let bad = d.problem.is_some() || d.max_scaled > tolerance;
                ok &= !bad;
                println!(
                    "{:<40} max abs {:.3e}  max rel {:.3e}  {}",
                    d.output,
                    d.max_abs,
                    d.max_scaled,
                    d.problem.clone().unwrap_or_else(|| if bad {
                        "ABOVE TOLERANCE".into()
                    } else {
                        "ok".into()
                    })
                );
            }
            println!(
                "{} (tolerance {tolerance:e}, relative to max(1, |b|))",
                if ok {
                    "the models agree"
                } else {
                    "the models DIFFER"
                }
            );
            Ok((if ok { 0 } else { 1 }, None))
        }
        Command::Revert {
            model,
            output,
            force,
            weights,
            json,
        } => {
            let loaded = load_model(&model)?;
            let g = GraphIndex::build(&loaded)?;
            let w = weights.as_deref().map(WeightsFile::load).transpose()?;
            let o = rewrite::revert::revert(&g, w.as_ref())?;
            let out = output.unwrap_or_else(|| beside(&model, ".reverted.onnx"));
            write_outcome(&model, &out, force, None, &o)?;
            finish(json, "revert", &model, &out, None, &o, &[])
        }
    }
}

/// The end of `fuse`, `rewrite` and `revert`: the report as JSON, or printed as text.
fn finish(
    json: bool,
    command: &str,
    input: &Path,
    out: &Path,
    weights: Option<&Path>,
    o: &Outcome,
    inlined: &[String],
) -> Result<(i32, Option<serde_json::Value>)> {
    if json {
        let report = report::outcome_json(command, input, out, weights, o, inlined);
        return Ok((0, Some(report)));
    }
    let verb = match command {
        "fuse" => "fused",
        "rewrite" => "rewrote",
        _ => "reverted",
    };
    print_outcome(verb, input, out, weights, o);
    print_inlined(inlined);
    Ok((0, None))
}
