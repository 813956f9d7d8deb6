//! The differential fuzzer: seeded random graphs (LayerNorm forms, their near-misses, in random
//! surroundings with shared and tied tensors, If branches, model-local functions, float16) through
//! every command. Each claimed-exact output runs in tract against the original, each revert must
//! give the original's outputs back, every written model must be structurally sound and load
//! again, and nothing may panic. Every 20th case also goes through the binary.
//!
//! - CI: seeds 0..2000 (`cargo test --test it fuzz_rewrites`).
//! - Long: `ADANORM_FUZZ_CASES=N [ADANORM_FUZZ_START=S]`; one case: `ADANORM_FUZZ_SEED=n`.
//!
//! A failing case's model is written to `target/fuzz-failures/<seed>.onnx`; the test fails
//! listing every failure by class.
//!
//! `ADANORM_FUZZ_KEEP=DIR` keeps every `ADANORM_FUZZ_KEEP_EVERY`th case (default 4) in
//! `DIR/<seed>/`: the original, every written model and a `manifest.json` saying which are
//! claimed exact and which are reverts, for `tests/python/fuzz_check.py` (onnx.checker, strict
//! shape inference, ONNX Runtime), which `scripts/test` runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::fuzz;
use crate::fuzz::commands::{self, Record, Reference};
use adanorm_onnx::onnx::save_model;
use adanorm_onnx::runner::{compare, random_inputs, run};

/// Every this many cases also run through the binary.
const CLI_EVERY: u64 = 20;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

fn failures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures")
}

fn has_nan(t: &adanorm_tract::tract_onnx::prelude::Tensor) -> bool {
    use adanorm_tract::tract_onnx::prelude::DatumType;
    t.cast_to_dt(DatumType::F64)
        .ok()
        .and_then(|t| {
            t.to_plain_array_view::<f64>()
                .ok()
                .map(|v| v.iter().any(|x| x.is_nan()))
        })
        .unwrap_or(false)
}

/// Copies a case's models into `ADANORM_FUZZ_KEEP/<seed>/` with its manifest (every
/// `ADANORM_FUZZ_KEEP_EVERY`th seed). Failing to write there fails the test: a stage that
/// silently checks nothing would pass.
fn keep_for_python(seed: u64, half: bool, original: &Path, written: &[commands::Kept]) {
    let Some(root) = std::env::var_os("ADANORM_FUZZ_KEEP") else {
        return;
    };
    let every = env_u64("ADANORM_FUZZ_KEEP_EVERY").unwrap_or(4).max(1);
    if !seed.is_multiple_of(every) {
        return;
    }
    let dir = Path::new(&root).join(seed.to_string());
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let copy = |from: &Path, name: &str| {
        std::fs::copy(from, dir.join(name))
            .unwrap_or_else(|e| panic!("keep {} in {}: {e}", from.display(), dir.display()));
    };
    copy(original, "original.onnx");
    let mut models = vec![];
    for (i, w) in written.iter().enumerate() {
        let file = format!("m{i}.onnx");
        copy(&w.path, &file);
        models.push(serde_json::json!({
            "file": file, "command": w.command, "exact": w.exact, "revert": w.revert,
        }));
    }
    let manifest = serde_json::json!({ "seed": seed, "half": half, "models": models });
    std::fs::write(dir.join("manifest.json"), manifest.to_string())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
}

struct CaseResult {
    seed: u64,
    desc: String,
    rec: Record,
}

fn run_case(seed: u64) -> CaseResult {
    let case = fuzz::surround::generate(seed);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.onnx");
    save_model(&case.model, &path, true).unwrap();
    let mut rec = Record::default();
    // float16 anywhere (a float16 model or a float16 island): the ops-spec's float16 tolerance.
    let half = case.half;
    // The original: it must load and be indexed unless mutated (else the generator is wrong).
    let indexed = commands::guarded(|| {
        let m = adanorm_onnx::onnx::load_model(&path)?;
        adanorm_onnx::graph::GraphIndex::build(&m)?
            .subgraphs()
            .map(|_| ())
    });
    match &indexed {
        Err(p) => rec.fail("panic", "load + index (original)", p.clone()),
        Ok(Err(e)) if !case.mutated => {
            rec.fail("generator: the model is refused", "load", e.clone())
        }
        _ => {}
    }
    let inputs = random_inputs(&path, &Default::default(), seed).unwrap_or_default();
    let mut outputs = if case.mutated {
        None
    } else {
        run(&path, inputs.clone()).ok()
    };
    // tract does not give NaN in the same places twice for one model (a Relu of a NaN is NaN or
    // 0 from run to run): an original with a NaN output is no yardstick.
    // A NaN inside (a Relu after it) can hide in one run and not the next: the original runs
    // twice and must agree with itself.
    let again = outputs
        .as_ref()
        .and_then(|_| run(&path, inputs.clone()).ok());
    let unstable = match (&outputs, &again) {
        (Some(a), Some(b)) => compare(a, b)
            .iter()
            .any(|d| d.problem.is_some() || d.max_abs != 0.0),
        _ => false,
    };
    if unstable
        || outputs
            .as_ref()
            .is_some_and(|o| o.iter().any(|(_, t)| has_nan(t)))
    {
        rec.count("original gives NaN or differs run to run (not compared)");
        outputs = None;
    }
    if outputs.is_none() && !case.mutated {
        rec.count("original not run in tract");
    }
    if case.mutated {
        rec.count("mutated (missing inputs)");
    }
    let loads = !case.mutated
        && std::panic::catch_unwind(|| adanorm_tract::model_for_path(&path))
            .is_ok_and(|r| r.is_ok());
    let reference = Reference {
        inputs,
        outputs,
        loads,
        tolerance: if half { 3e-2 } else { 1e-4 },
        adanorm_nodes: fuzz::structure::count_adanorm(&case.model),
        rmsnorms: if case.mutated {
            None
        } else {
            commands::rmsnorms(&path)
        },
    };
    let mut sub = Record::default();
    let lib_ok = commands::in_process(&mut sub, &path, tmp.path(), &reference);
    if case.mutated {
        // Only "an error or a result, never a panic" is asked of a model with missing inputs.
        sub.failures.retain(|(class, _, _)| class.contains("panic"));
    }
    rec.failures.append(&mut sub.failures);
    rec.exact_checked += sub.exact_checked;
    rec.reverts_checked += sub.reverts_checked;
    rec.changes += sub.changes;
    rec.errors += sub.errors;
    if !case.mutated {
        keep_for_python(seed, half, &path, &sub.written);
    }
    for (k, v) in sub.counts {
        *rec.counts.entry(k).or_default() += v;
    }
    if seed.is_multiple_of(CLI_EVERY) || std::env::var("ADANORM_FUZZ_SEED").is_ok() {
        let mut cli = Record::default();
        commands::through_cli(&mut cli, &path, &lib_ok);
        rec.failures.append(&mut cli.failures);
        for (k, v) in cli.counts {
            *rec.counts.entry(k).or_default() += v;
        }
    }
    if !rec.failures.is_empty() {
        let _ = std::fs::create_dir_all(failures_dir());
        let _ = save_model(
            &case.model,
            &failures_dir().join(format!("{seed}.onnx")),
            true,
        );
    }
    let mut desc = case.desc.join("; ");
    if case.mutated {
        desc += " [mutated]";
    }
    CaseResult { seed, desc, rec }
}

#[test]
fn fuzz_rewrites() {
    // Panics in the fuzzer's workers are caught per command and reported with the case: keep
    // their place, print nothing. The other tests of this binary run in the same process, so
    // their panics still go to the hook that was there.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if fuzz::IN_WORKER.get() {
            fuzz::LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string().replace('\n', " ")));
        } else {
            previous(info);
        }
    }));
    let (start, count) = match env_u64("ADANORM_FUZZ_SEED") {
        Some(seed) => (seed, 1),
        None => (
            env_u64("ADANORM_FUZZ_START").unwrap_or(0),
            env_u64("ADANORM_FUZZ_CASES").unwrap_or(2000),
        ),
    };
    let began = std::time::Instant::now();
    let next = AtomicU64::new(start);
    let results: Mutex<Vec<CaseResult>> = Mutex::new(vec![]);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(16);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                fuzz::IN_WORKER.set(true);
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= start + count {
                        break;
                    }
                    let r = std::panic::catch_unwind(|| run_case(seed)).unwrap_or_else(|p| {
                        let mut rec = Record::default();
                        rec.fail("panic", "the fuzzer itself", commands::panic_text(p));
                        CaseResult {
                            seed,
                            desc: String::new(),
                            rec,
                        }
                    });
                    results.lock().unwrap().push(r);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.seed);

    let mut by_class: BTreeMap<String, Vec<(u64, String, String)>> = BTreeMap::new();
    let (mut exact, mut reverts, mut changes, mut errors) = (0, 0, 0, 0);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &results {
        for (k, v) in &r.rec.counts {
            *counts.entry(k.clone()).or_default() += v;
        }
        exact += r.rec.exact_checked;
        reverts += r.rec.reverts_checked;
        changes += r.rec.changes;
        errors += r.rec.errors;
        for (class, cmd, reason) in &r.rec.failures {
            by_class
                .entry(class.clone())
                .or_default()
                .push((r.seed, cmd.clone(), reason.clone()));
        }
    }
    let failed_cases = results
        .iter()
        .filter(|r| !r.rec.failures.is_empty())
        .count();
    println!(
        "fuzz: {} graphs (seeds {start}..{}) in {:.1}s on {threads} threads: {changes} changes, {exact} claimed-exact outputs \
         and {reverts} reverts checked in tract, {errors} command errors; {failed_cases} failing cases",
        results.len(),
        start + count,
        began.elapsed().as_secs_f64()
    );
    for (k, v) in &counts {
        println!("  {v:>6}  {k}");
    }
    // Every failure, in full, for whoever triages them.
    let mut full = String::new();
    for (class, list) in &by_class {
        for (seed, cmd, reason) in list {
            let desc = &results.iter().find(|r| r.seed == *seed).unwrap().desc;
            full += &format!("{class}\tseed {seed}\t{cmd}\t{desc}\t{reason}\n");
        }
    }
    if !full.is_empty() {
        let _ = std::fs::create_dir_all(failures_dir());
        let _ = std::fs::write(
            failures_dir().join(format!("report-{start}-{}.tsv", start + count)),
            full,
        );
    }
    let verbose = count == 1;
    for (class, list) in &by_class {
        let mut seeds: Vec<u64> = list.iter().map(|x| x.0).collect();
        seeds.dedup();
        println!(
            "\n== {class}: {} failures in {} cases",
            list.len(),
            seeds.len()
        );
        let show = if verbose { list.len() } else { 3 };
        for (seed, cmd, reason) in list.iter().take(show) {
            let desc = &results.iter().find(|r| r.seed == *seed).unwrap().desc;
            let reason: String = reason
                .chars()
                .take(if verbose { 4000 } else { 400 })
                .collect();
            println!("  seed {seed} [{desc}]\n    {cmd}: {reason}");
        }
        println!(
            "  seeds: {:?}{}",
            &seeds[..seeds.len().min(30)],
            if seeds.len() > 30 { " …" } else { "" }
        );
    }
    if !by_class.is_empty() {
        println!(
            "\nmodels: {}/<seed>.onnx; rerun one: ADANORM_FUZZ_SEED=<seed> cargo test --test it fuzz_rewrites -- --nocapture",
            failures_dir().display()
        );
    }
    assert!(
        by_class.is_empty(),
        "{failed_cases} fuzz cases failed in {} classes (see above)",
        by_class.len()
    );
}
