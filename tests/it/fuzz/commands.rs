//! The commands every case goes through, in-process (the library calls the CLI makes) and
//! through the real binary: their options, and the checks on what each one writes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::{load_model, save_model, Model};
use adanorm_onnx::patterns::{
    find_matches_everywhere, local_functions::inline_functions_with_matches,
};
use adanorm_onnx::rewrite::{
    plan::plan_model, revert::revert, weights::WeightsFile, Affine, Options, Outcome, Target,
};
use adanorm_onnx::runner::{compare, run};
use adanorm_tract::tract_onnx::prelude::Tensor;

use super::structure;

/// A command of the CLI and the library options it stands for.
pub struct Cmd {
    pub name: &'static str,
    pub args: &'static [&'static str],
    pub opts: Options,
}

fn opts(
    target: Target,
    affine: Affine,
    ck: Option<(f64, f64)>,
    portable: bool,
    include_fused: bool,
) -> Options {
    Options {
        target,
        c: ck.map(|x| x.0),
        k: ck.map(|x| x.1),
        affine,
        portable,
        include_fused,
        only: vec![],
        residual: true,
    }
}

pub fn commands() -> Vec<Cmd> {
    vec![
        Cmd {
            name: "fuse",
            args: &["fuse"],
            opts: opts(Target::Same, Affine::Keep, None, false, false),
        },
        Cmd {
            name: "fuse --portable",
            args: &["fuse", "--portable"],
            opts: opts(Target::Same, Affine::Keep, None, true, false),
        },
        Cmd {
            name: "rewrite --k 0 --c 1 --affine keep",
            args: &["rewrite", "--k", "0", "--c", "1", "--affine", "keep"],
            opts: opts(Target::AdaNorm, Affine::Keep, Some((1.0, 0.0)), false, true),
        },
        Cmd {
            name: "rewrite --affine fold",
            args: &["rewrite", "--affine", "fold"],
            opts: opts(Target::AdaNorm, Affine::Fold, None, false, true),
        },
        Cmd {
            name: "rewrite --to simple --affine fold",
            args: &["rewrite", "--to", "simple", "--affine", "fold"],
            opts: opts(Target::Simple, Affine::Fold, None, false, true),
        },
        Cmd {
            name: "rewrite --affine drop",
            args: &["rewrite", "--affine", "drop"],
            opts: opts(Target::AdaNorm, Affine::Drop, None, false, true),
        },
        // Not in the list: the one fold into AdaNorm that claims to be exact.
        Cmd {
            name: "rewrite --k 0 --c 1 --affine fold",
            args: &["rewrite", "--k", "0", "--c", "1", "--affine", "fold"],
            opts: opts(Target::AdaNorm, Affine::Fold, Some((1.0, 0.0)), false, true),
        },
    ]
}

pub fn fuse_opts() -> Options {
    opts(Target::Same, Affine::Keep, None, false, false)
}

/// A panic's message (the hook in the driver keeps the location).
pub fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    let at = super::LAST_PANIC
        .with(|l| l.borrow_mut().take())
        .unwrap_or_default();
    format!("{msg} [{at}]")
}

/// `f`, with a panic turned into `Err("panicked: …")`, and an error into its text.
pub fn guarded<T>(
    f: impl FnOnce() -> adanorm_onnx::Result<T>,
) -> Result<Result<T, String>, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(Ok(v)),
        Ok(Err(e)) => Ok(Err(e.to_string())),
        Err(p) => Err(panic_text(p)),
    }
}

pub fn load_for_matching(path: &Path) -> adanorm_onnx::Result<Model> {
    Ok(inline_functions_with_matches(load_model(path)?)?.0)
}

/// An error's text without file names and numbers, to count errors by kind.
fn short(e: &str) -> String {
    let e = e.rsplit(": ").next().unwrap_or(e);
    e.chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .take(70)
        .collect()
}

/// What a case records: failures as (class, command, reason), and counts.
#[derive(Default)]
pub struct Record {
    pub failures: Vec<(String, String, String)>,
    pub exact_checked: usize,
    pub reverts_checked: usize,
    pub changes: usize,
    pub errors: usize,
    /// Counts for the summary: matches by family and rewritability, command errors by text.
    pub counts: std::collections::BTreeMap<String, usize>,
    /// Every model the case wrote, for the Python stage (`ADANORM_FUZZ_KEEP`).
    pub written: Vec<Kept>,
}

/// A written model and what the Python stage must check of it.
pub struct Kept {
    pub path: PathBuf,
    pub command: String,
    /// A claimed-exact rewrite: its outputs must equal the original's within the tolerance.
    pub exact: bool,
    /// A revert: the original's outputs back.
    pub revert: bool,
}

impl Record {
    pub fn count(&mut self, what: impl Into<String>) {
        *self.counts.entry(what.into()).or_default() += 1;
    }

    pub fn fail(&mut self, class: impl Into<String>, cmd: &str, reason: impl Into<String>) {
        self.failures
            .push((class.into(), cmd.to_string(), reason.into()));
    }
}

/// The original's behaviour in tract, the yardstick for every output.
pub struct Reference {
    pub inputs: Vec<(String, Tensor)>,
    /// Its outputs, when tract ran it.
    pub outputs: Option<Vec<(String, Tensor)>>,
    /// Whether tract loaded it (even if it could not run it).
    pub loads: bool,
    pub tolerance: f64,
    pub adanorm_nodes: usize,
    /// RMSNorms the original holds: every rewrite must leave them all.
    pub rmsnorms: Option<usize>,
}

/// RMSNorm matches in the model at `path` (functions with matches inlined, as the CLI reads it).
pub fn rmsnorms(path: &Path) -> Option<usize> {
    guarded(|| {
        let m = load_for_matching(path)?;
        let g = GraphIndex::build(&m)?;
        let subs = g.subgraphs()?;
        Ok(find_matches_everywhere(&g, &subs)
            .iter()
            .flat_map(|(_, ms)| ms.iter())
            .filter(|m| m.family == adanorm_onnx::patterns::Family::RmsNorm)
            .count())
    })
    .ok()
    .and_then(Result::ok)
}

/// A written output: where, and its weights file.
pub struct Written {
    pub path: PathBuf,
    pub weights: Option<PathBuf>,
    pub exact: bool,
    pub changed: bool,
}

/// Saves an outcome and checks it: structure, reload, tract, and the claimed-exact comparison.
pub fn check_outcome(
    rec: &mut Record,
    cmd: &str,
    o: &Outcome,
    dir: &Path,
    tag: &str,
    r: &Reference,
) -> Option<Written> {
    let path = dir.join(format!("{tag}.onnx"));
    if let Err(e) = save_model(&o.model, &path, true) {
        rec.fail("save fails", cmd, e.to_string());
        return None;
    }
    let weights = o.weights.as_ref().map(|w| {
        let p = dir.join(format!("{tag}.safetensors"));
        w.save(&p, true).map(|_| p)
    });
    let weights = match weights {
        Some(Err(e)) => {
            rec.fail("weights save fails", cmd, e.to_string());
            None
        }
        Some(Ok(p)) => Some(p),
        None => None,
    };
    for (class, detail) in structure::check(&o.model) {
        rec.fail(class, cmd, detail);
    }
    match guarded(|| {
        let m = load_model(&path)?;
        let g = GraphIndex::build(&m)?;
        let subs = g.subgraphs()?;
        let mut p = vec![];
        for s in std::iter::once(&g).chain(&subs) {
            structure::adanorm_types(s, &mut p);
        }
        Ok(p)
    }) {
        Err(p) => rec.fail("panic", &format!("{cmd} (reload)"), p),
        Ok(Err(e)) => rec.fail("written model does not load again", cmd, e),
        Ok(Ok(p)) => p.into_iter().for_each(|(c, d)| rec.fail(c, cmd, d)),
    }
    if let (Some(before), Some(after)) = (r.rmsnorms, rmsnorms(&path)) {
        if after != before {
            rec.fail(
                "rmsnorm touched by a rewrite",
                cmd,
                format!("{before} RMSNorm(s) before, {after} after"),
            );
        }
    }
    let exact = o.same_function() && !o.changes.is_empty();
    rec.changes += o.changes.len();
    in_tract(
        rec,
        cmd,
        &path,
        r,
        exact.then_some("claimed-exact output differs from the original"),
        false,
    );
    if exact {
        rec.exact_checked += 1;
    }
    rec.written.push(Kept {
        path: path.clone(),
        command: cmd.to_string(),
        exact,
        revert: false,
    });
    Some(Written {
        path,
        weights,
        exact,
        changed: !o.changes.is_empty(),
    })
}

/// Runs `path` in tract against the original: it must load and run where the original does;
/// with `differs` set, its outputs must equal the original's within the tolerance (bit for bit
/// when `bitwise`).
pub fn in_tract(
    rec: &mut Record,
    cmd: &str,
    path: &Path,
    r: &Reference,
    differs: Option<&str>,
    bitwise: bool,
) {
    match &r.outputs {
        Some(want) => match run(path, r.inputs.clone()) {
            Err(e) => {
                let e = e.to_string();
                let class = if e.contains("panicked") {
                    "tract panics on a written model"
                } else {
                    "tract cannot run a written model"
                };
                rec.fail(class, cmd, e);
            }
            Ok(got) => {
                if let Some(class) = differs {
                    for d in compare(want, &got) {
                        if d.problem.is_some() || d.max_scaled > r.tolerance {
                            rec.fail(class, cmd, format!("{d:?}"));
                        } else if bitwise && d.max_abs != 0.0 {
                            rec.fail("reverted output not bit-identical", cmd, format!("{d:?}"));
                        }
                    }
                }
            }
        },
        None if r.loads => {
            if let Err(e) = catch_unwind(|| adanorm_tract::model_for_path(path))
                .map_err(panic_text)
                .and_then(|r| r.map_err(|e| format!("{e:#}")))
            {
                rec.fail("tract cannot load a written model", cmd, e);
            }
        }
        None => {}
    }
}

/// `revert` of a written output (with its weights): structure, no ai.adanorm left, and the
/// original's outputs back.
pub fn check_revert(
    rec: &mut Record,
    cmd: &str,
    w: &Written,
    dir: &Path,
    tag: &str,
    r: &Reference,
) {
    let cmd = format!("revert ({cmd})");
    let res = guarded(|| {
        let m = load_model(&w.path)?;
        let g = GraphIndex::build(&m)?;
        let weights = w.weights.as_deref().map(WeightsFile::load).transpose()?;
        revert(&g, weights.as_ref())
    });
    let o = match res {
        Err(p) => return rec.fail("panic", &cmd, p),
        Ok(Err(e)) => {
            if w.changed {
                rec.fail("revert of a rewrite fails", &cmd, e);
            }
            return;
        }
        Ok(Ok(o)) => o,
    };
    let path = dir.join(format!("{tag}.reverted.onnx"));
    if let Err(e) = save_model(&o.model, &path, true) {
        return rec.fail("save fails", &cmd, e.to_string());
    }
    for (class, detail) in structure::check(&o.model) {
        rec.fail(class, &cmd, detail);
    }
    if let Ok(Err(e)) | Err(e) = guarded(|| GraphIndex::build(&load_model(&path)?).map(|_| ())) {
        rec.fail("written model does not load again", &cmd, e);
    }
    let left = structure::count_adanorm(&o.model);
    if left > r.adanorm_nodes {
        rec.fail(
            "revert leaves ai.adanorm nodes",
            &cmd,
            format!("{left} left, the original had {}", r.adanorm_nodes),
        );
    }
    rec.reverts_checked += 1;
    rec.written.push(Kept {
        path: path.clone(),
        command: cmd.clone(),
        exact: false,
        revert: true,
    });
    in_tract(
        rec,
        &cmd,
        &path,
        r,
        Some("reverted output differs from the original"),
        true,
    );
}

/// Every command in-process on the model at `path`.
pub fn in_process(rec: &mut Record, path: &Path, dir: &Path, r: &Reference) -> Vec<Option<bool>> {
    // inspect
    match guarded(|| {
        let m = load_for_matching(path)?;
        let g = GraphIndex::build(&m)?;
        let subs = g.subgraphs()?;
        let found = find_matches_everywhere(&g, &subs);
        let _ = adanorm_onnx::report::inspect_json("m", &found);
        let _ = adanorm_onnx::report::inspect_table("m", &found);
        Ok(found
            .iter()
            .flat_map(|(_, ms)| {
                ms.iter().map(|m| {
                    format!(
                        "match: {} {}",
                        m.family.name(),
                        if m.rewritable {
                            "rewritable"
                        } else {
                            "not rewritable"
                        }
                    )
                })
            })
            .collect::<Vec<_>>())
    }) {
        Err(p) => rec.fail("panic", "inspect", p),
        Ok(Ok(found)) => found.into_iter().for_each(|f| rec.count(f)),
        Ok(Err(e)) => rec.count(format!("error: inspect: {}", short(&e))),
    }
    let mut ok = vec![];
    for (i, c) in commands().iter().enumerate() {
        let res = guarded(|| {
            let m = load_for_matching(path)?;
            let g = GraphIndex::build(&m)?;
            plan_model(&g, &c.opts)
        });
        let o = match res {
            Err(p) => {
                rec.fail("panic", c.name, p);
                ok.push(None);
                continue;
            }
            Ok(Err(e)) => {
                rec.errors += 1;
                rec.count(format!("command error: {}", short(&e)));
                ok.push(Some(false));
                continue;
            }
            Ok(Ok(o)) => o,
        };
        ok.push(Some(true));
        let tag = format!("c{i}");
        let Some(w) = check_outcome(rec, c.name, &o, dir, &tag, r) else {
            continue;
        };
        check_revert(rec, c.name, &w, dir, &tag, r);
        // fuse of an already fused / rewritten model
        if i == 0 || i == 2 {
            let again = format!("fuse ({})", c.name);
            match guarded(|| {
                let m = load_for_matching(&w.path)?;
                let g = GraphIndex::build(&m)?;
                plan_model(&g, &fuse_opts())
            }) {
                Err(p) => rec.fail("panic", &again, p),
                Ok(Err(_)) => rec.errors += 1,
                Ok(Ok(o2)) => {
                    let exact_before = w.exact || !w.changed;
                    let tag2 = format!("{tag}.again");
                    let r2 = Reference {
                        rmsnorms: r.rmsnorms,
                        adanorm_nodes: r.adanorm_nodes,
                        inputs: r.inputs.clone(),
                        outputs: if exact_before {
                            r.outputs.clone()
                        } else {
                            None
                        },
                        loads: r.loads,
                        tolerance: r.tolerance,
                    };
                    if check_outcome(rec, &again, &o2, dir, &tag2, &r2).is_some() && !exact_before {
                        // Exact against its input, not against the original.
                        if let Some(k) = rec.written.last_mut() {
                            k.exact = false;
                        }
                    }
                }
            }
        }
    }
    ok
}

/// The CLI on a copy of the model: exit codes 0/1/2, no panic text, the input untouched, no file
/// but the requested ones; its exit codes agree with the library's results (`lib_ok`).
pub fn through_cli(rec: &mut Record, model: &Path, lib_ok: &[Option<bool>]) {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("model.onnx");
    std::fs::copy(model, &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let mut expected: Vec<PathBuf> = vec![input.clone()];
    let bin = env!("CARGO_BIN_EXE_adanorm-onnx");
    let mut exec =
        |rec: &mut Record, name: &str, args: Vec<String>, wants: &[PathBuf]| -> Option<i32> {
            let out = std::process::Command::new(bin)
                .args(&args)
                .output()
                .unwrap();
            rec.count(format!(
                "cli: exit {}",
                out.status.code().map_or("signal".into(), |c| c.to_string())
            ));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let code = out.status.code();
            if !matches!(code, Some(0..=2)) {
                rec.fail("cli: exit code", name, format!("{code:?}: {text}"));
            }
            if text.contains("panicked") || text.contains("internal error") {
                rec.fail(
                    "cli: panic",
                    name,
                    text.lines()
                        .filter(|l| l.contains("panicked") || l.contains("internal error"))
                        .collect::<Vec<_>>()
                        .join(" | "),
                );
            }
            if std::fs::read(&input).map(|b| b != before).unwrap_or(true) {
                rec.fail("cli: input file changed", name, "");
            }
            if code == Some(0) {
                expected.extend(wants.iter().filter(|p| p.exists()).cloned());
            }
            let mut present: Vec<PathBuf> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            present.sort();
            let extra: Vec<String> = present
                .iter()
                .filter(|p| !expected.contains(p))
                .map(|p| p.display().to_string())
                .collect();
            if !extra.is_empty() {
                rec.fail("cli: unexpected file written", name, extra.join(", "));
                expected.extend(present);
            }
            code
        };
    let s = |p: &Path| p.display().to_string();
    exec(rec, "inspect", vec!["inspect".into(), s(&input)], &[]);
    exec(
        rec,
        "inspect --json",
        vec!["inspect".into(), s(&input), "--json".into()],
        &[],
    );
    for (i, c) in commands().iter().enumerate() {
        let out = tmp.path().join(format!("out{i}.onnx"));
        let w = tmp.path().join(format!("out{i}.safetensors"));
        let mut args: Vec<String> = c.args.iter().map(|a| a.to_string()).collect();
        args.extend([s(&input), "-o".into(), s(&out)]);
        if c.args[0] == "rewrite" {
            args.extend(["--weights-out".into(), s(&w)]);
        }
        let code = exec(rec, c.name, args, &[out.clone(), w.clone()]);
        match (lib_ok.get(i).copied().flatten(), code) {
            (Some(true), Some(0)) | (Some(false), Some(2)) | (None, _) => {}
            (lib, code) => rec.fail(
                "cli: exit code disagrees with the library",
                c.name,
                format!("library ok: {lib:?}, exit {code:?}"),
            ),
        }
        if code == Some(0) {
            let rev = tmp.path().join(format!("out{i}.reverted.onnx"));
            let mut args = vec!["revert".into(), s(&out), "-o".into(), s(&rev)];
            if w.exists() {
                args.extend(["--weights".into(), s(&w)]);
            }
            exec(rec, &format!("revert ({})", c.name), args, &[rev]);
        }
    }
}
