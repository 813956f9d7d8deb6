//! `libadanorm_ort` from a Rust host: the `ort` crate with `load-dynamic` runs a real onnxruntime
//! and loads our library through `RegisterCustomOpsLibrary_V2`, exactly as a user's program would.
//!
//! Needs `ADANORM_ORT_ONNXRUNTIME` = path of a `libonnxruntime.so` (`crates/ort/tests/run_tests.sh`
//! points it at the pip wheel's). Without it every test prints `SKIPPED` and passes, so a plain
//! `cargo test --workspace` needs no Python. `ADANORM_ORT_LIB` overrides which
//! `libadanorm_ort.so` is loaded (default: the one cargo built next to this test).

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use adanorm_kernels::{reference, Params, Variant};
use common::onnx_model::{dtype, Attr, Dim, OneNodeModel, ValueInfo};
use half::{bf16, f16};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::PrimitiveTensorElementType;
use ort::value::Tensor;

static HOST: OnceLock<Option<Environment>> = OnceLock::new();

/// The onnxruntime environment, or `None` when no runtime was given.
fn host() -> Option<&'static Environment> {
    HOST.get_or_init(|| {
        let path = std::env::var_os("ADANORM_ORT_ONNXRUNTIME")?;
        let env = ort::init_from(&path)
            .unwrap_or_else(|e| {
                panic!("cannot load onnxruntime from {path:?} (relative paths start at crates/ort): {e}")
            })
            .with_name("adanorm-ort-tests")
            .build()
            .expect("onnxruntime environment");
        Some(env)
    })
    .as_ref()
}

macro_rules! require_host {
    () => {
        match host() {
            Some(env) => env,
            None => {
                eprintln!(
                    "SKIPPED: set ADANORM_ORT_ONNXRUNTIME to a libonnxruntime.so to run this test \
                     (crates/ort/tests/run_tests.sh does)"
                );
                return;
            }
        }
    };
}

/// The library under test.
fn library() -> PathBuf {
    if let Some(p) = std::env::var_os("ADANORM_ORT_LIB") {
        return p.into();
    }
    // target/<profile>/deps/<this test> -> target/<profile>/libadanorm_ort.so
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    for dir in [deps.parent().expect("profile dir"), deps] {
        let candidate = dir.join("libadanorm_ort.so");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("libadanorm_ort.so not found next to {exe:?}; set ADANORM_ORT_LIB");
}

fn session(env: &Environment, model: &OneNodeModel, threads: usize) -> Result<Session, String> {
    // onnxruntime adds a custom domain to ONNX's process-wide schema table with an unlocked
    // check-then-insert; two sessions created at once in a fresh process can race there
    // ("Trying to add a domain to DomainToVersion map…", seen in CI). Sessions are created one
    // at a time; they still run concurrently.
    static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CREATE.lock().unwrap_or_else(|p| p.into_inner());
    Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_intra_threads(threads)
        .map_err(|e| e.to_string())?
        .with_operator_library(library())
        .map_err(|e| e.to_string())?
        .commit_from_memory(&model.encode())
        .map_err(|e| e.to_string())
}

/// Element types under test, with the spec's tolerance and ONNX code.
trait TestElem: PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static {
    const ONNX: i32;
    /// Allowed |error| per unit of max(1, |reference|) (ops-spec "Tolerances").
    const TOL: f64;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}

macro_rules! test_elem {
    ($t:ty, $onnx:expr, $tol:expr, $from:expr, $to:expr) => {
        impl TestElem for $t {
            const ONNX: i32 = $onnx;
            const TOL: f64 = $tol;
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
            fn to_f64(self) -> f64 {
                $to(self)
            }
        }
    };
}

test_elem!(f32, dtype::FLOAT, 1e-5, |v| v as f32, |v: f32| v as f64);
test_elem!(f64, dtype::DOUBLE, 1e-12, |v| v, |v| v);
test_elem!(f16, dtype::FLOAT16, 1e-2, f16::from_f64, f16::to_f64);
test_elem!(bf16, dtype::BFLOAT16, 2e-2, bf16::from_f64, bf16::to_f64);

/// Deterministic values in about [-2, 2] plus `offset` (no RNG crate needed).
fn values(n: usize, seed: u64, offset: f64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            offset + ((s >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
        })
        .collect()
}

struct Case {
    op: &'static str,
    attrs: Vec<(String, Attr)>,
    params: Params,
    axis: i64,
    x_shape: Vec<usize>,
    param_shape: Vec<usize>,
}

impl Case {
    fn new(op: &'static str, unbiased: i64, eps_in_sqrt: i64) -> Case {
        let (eps, c, k) = (1e-3f32, 1.5f32, 0.25f32);
        let variant = match op {
            "AdaNorm" => Variant::AdaNorm {
                c: c as f64,
                k: k as f64,
            },
            _ => Variant::LayerNormSimple,
        };
        let mut attrs = vec![
            ("epsilon".to_owned(), Attr::Float(eps)),
            ("unbiased".to_owned(), Attr::Int(unbiased)),
            ("eps_in_sqrt".to_owned(), Attr::Int(eps_in_sqrt)),
        ];
        if op == "AdaNorm" {
            attrs.push(("c".to_owned(), Attr::Float(c)));
            attrs.push(("k".to_owned(), Attr::Float(k)));
        }
        Case {
            op,
            attrs,
            params: Params::from_attributes(variant, eps as f64, unbiased, eps_in_sqrt).unwrap(),
            axis: -1,
            x_shape: vec![3, 4, 16],
            param_shape: vec![16],
        }
    }

    fn model<T: TestElem>(&self) -> OneNodeModel {
        let stats = if T::ONNX == dtype::DOUBLE {
            dtype::DOUBLE
        } else {
            dtype::FLOAT
        };
        let x_dims: Vec<i64> = self.x_shape.iter().map(|&d| d as i64).collect();
        let p_dims: Vec<i64> = self.param_shape.iter().map(|&d| d as i64).collect();
        let mut attrs = self.attrs.clone();
        attrs.push(("axis".to_owned(), Attr::Int(self.axis)));
        OneNodeModel {
            op_type: self.op.to_owned(),
            domain: "ai.adanorm".to_owned(),
            node_name: "norm0".to_owned(),
            node_inputs: vec!["X".into(), "Scale".into(), "B".into()],
            node_outputs: vec!["Y".into(), "Mean".into(), "InvStdDev".into()],
            attrs,
            graph_inputs: vec![
                ValueInfo::new("X", T::ONNX, Some(&x_dims)),
                ValueInfo::new("Scale", T::ONNX, Some(&p_dims)),
                ValueInfo::new("B", T::ONNX, Some(&p_dims)),
            ],
            graph_outputs: vec![
                ValueInfo::new("Y", T::ONNX, None),
                ValueInfo::new("Mean", stats, None),
                ValueInfo::new("InvStdDev", stats, None),
            ],
            opset: 1,
        }
    }

    /// Runs the case on `threads` intra-op threads and checks every output against the oracle.
    fn check<T: TestElem, S: TestElem>(&self, env: &Environment, threads: usize) {
        let n: usize = self.x_shape.iter().product();
        let p: usize = self.param_shape.iter().product();
        // Inputs rounded to T first; the oracle sees exactly what the op sees.
        let x: Vec<T> = values(n, 1, 3.0).into_iter().map(T::from_f64).collect();
        let scale: Vec<T> = values(p, 2, 1.0).into_iter().map(T::from_f64).collect();
        let bias: Vec<T> = values(p, 3, 0.0).into_iter().map(T::from_f64).collect();
        let f = |v: &[T]| v.iter().map(|&e| e.to_f64()).collect::<Vec<f64>>();
        let (xf, sf, bf) = (f(&x), f(&scale), f(&bias));
        let want = reference(
            &xf,
            &self.x_shape,
            self.axis,
            Some((&sf, &self.param_shape)),
            Some((&bf, &self.param_shape)),
            &self.params,
        )
        .unwrap();

        let mut s = session(env, &self.model::<T>(), threads).unwrap();
        let tensor = |v: Vec<T>, shape: &[usize]| Tensor::from_array((shape.to_vec(), v)).unwrap();
        let out = s
            .run(ort::inputs![
                "X" => tensor(x, &self.x_shape),
                "Scale" => tensor(scale, &self.param_shape),
                "B" => tensor(bias, &self.param_shape),
            ])
            .unwrap();
        let (y_shape, y) = out["Y"].try_extract_tensor::<T>().unwrap();
        assert_eq!(
            **y_shape,
            self.x_shape.iter().map(|&d| d as i64).collect::<Vec<_>>()[..]
        );
        let what = format!(
            "{} {:?} {:?}",
            self.op,
            std::any::type_name::<T>(),
            self.params
        );
        close(&what, "Y", y.iter().map(|&v| v.to_f64()), &want.y, T::TOL);
        let (_, mean) = out["Mean"].try_extract_tensor::<S>().unwrap();
        close(
            &what,
            "Mean",
            mean.iter().map(|&v| v.to_f64()),
            &want.mean,
            S::TOL,
        );
        let (_, inv) = out["InvStdDev"].try_extract_tensor::<S>().unwrap();
        close(
            &what,
            "InvStdDev",
            inv.iter().map(|&v| v.to_f64()),
            &want.inv_std_dev,
            S::TOL,
        );
    }
}

fn close(what: &str, name: &str, got: impl Iterator<Item = f64>, want: &[f64], tol: f64) {
    let got: Vec<f64> = got.collect();
    assert_eq!(got.len(), want.len(), "{what}: {name} length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= tol * w.abs().max(1.0),
            "{what}: {name}[{i}] = {g}, reference {w} (|err| {err:e})"
        );
    }
}

#[test]
fn every_type_and_op_matches_the_reference() {
    let env = require_host!();
    for op in ["AdaNorm", "LayerNormSimple"] {
        let case = Case::new(op, 0, 1);
        case.check::<f32, f32>(env, 1);
        case.check::<f64, f64>(env, 1);
        case.check::<f16, f32>(env, 1);
        case.check::<bf16, f32>(env, 1);
    }
}

#[test]
fn every_variance_and_epsilon_form_matches_the_reference() {
    let env = require_host!();
    for op in ["AdaNorm", "LayerNormSimple"] {
        for unbiased in [0, 1] {
            for eps_in_sqrt in [0, 1] {
                Case::new(op, unbiased, eps_in_sqrt).check::<f32, f32>(env, 1);
            }
        }
    }
}

#[test]
fn many_rows_on_two_threads_match_the_reference() {
    let env = require_host!();
    let mut case = Case::new("AdaNorm", 1, 0);
    case.x_shape = vec![8, 64, 256];
    case.param_shape = vec![256];
    case.check::<f32, f32>(env, 2);
    // A leading axis: rows of 64*256 elements, Scale broadcast over the middle dim.
    case.axis = 1;
    case.param_shape = vec![1, 256];
    case.check::<f64, f64>(env, 2);
}

#[test]
fn a_bad_axis_is_an_error_naming_the_node_not_a_crash() {
    let env = require_host!();
    let mut case = Case::new("LayerNormSimple", 0, 1);
    case.axis = 3;
    let Err(err) = session(env, &case.model::<f32>(), 1) else {
        panic!("axis 3 of rank 3 must fail");
    };
    assert!(err.contains("LayerNormSimple node 'norm0'"), "{err}");
    assert!(
        err.contains("axis must be in [-r, r): axis = 3 for rank 3"),
        "{err}"
    );
}

#[test]
fn an_input_error_at_run_time_names_the_node() {
    let env = require_host!();
    // X declared without a shape, so the rank is only known when the model runs.
    let model = OneNodeModel {
        op_type: "AdaNorm".into(),
        domain: "ai.adanorm".into(),
        node_name: "ada7".into(),
        node_inputs: vec!["X".into()],
        node_outputs: vec!["Y".into()],
        attrs: vec![("axis".into(), Attr::Int(-3))],
        graph_inputs: vec![ValueInfo::new("X", dtype::FLOAT, None)],
        graph_outputs: vec![ValueInfo::new("Y", dtype::FLOAT, None)],
        opset: 1,
    };
    let mut s = session(env, &model, 1).unwrap();
    let x = Tensor::from_array((vec![2usize, 5], vec![0f32; 10])).unwrap();
    let err = match s.run(ort::inputs!["X" => x]) {
        Ok(_) => panic!("axis -3 of rank 2 must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("AdaNorm node 'ada7'"), "{err}");
    assert!(
        err.contains("axis must be in [-r, r): axis = -3 for rank 2"),
        "{err}"
    );
    // The session stays usable.
    let ok = s.run(
        ort::inputs!["X" => Tensor::from_array((vec![2usize, 5, 3], vec![1f32; 30])).unwrap()],
    );
    assert!(ok.is_ok());
}

#[test]
fn a_type_outside_t_is_refused_by_onnxruntime_with_the_node_name() {
    let env = require_host!();
    let mut model = Case::new("AdaNorm", 0, 1).model::<f32>();
    for v in model
        .graph_inputs
        .iter_mut()
        .chain(model.graph_outputs.iter_mut().take(1))
    {
        v.elem = dtype::INT32;
    }
    let Err(err) = session(env, &model, 1) else {
        panic!("int32 must be refused");
    };
    assert!(err.contains("norm0"), "{err}");
    assert!(err.contains("int32"), "{err}");
}

#[test]
fn symbolic_dims_of_y_are_inferred_on_recent_onnxruntime() {
    let env = require_host!();
    let mut model = Case::new("AdaNorm", 0, 1).model::<f32>();
    model.graph_inputs[0].shape = Some(vec![Dim::Named("batch"), Dim::Known(4), Dim::Known(16)]);
    let s = session(env, &model, 1).unwrap();
    // Whatever the runtime infers, loading and running must work; on onnxruntime >= 1.24 the
    // library also infers Y's shape (Python tests check the exact shape per version).
    assert_eq!(s.outputs()[0].name(), "Y");
}

#[test]
fn concurrent_sessions_on_many_threads() {
    let env = require_host!();
    std::thread::scope(|scope| {
        for t in 0..6 {
            scope.spawn(move || {
                let case = Case::new(
                    if t % 2 == 0 {
                        "AdaNorm"
                    } else {
                        "LayerNormSimple"
                    },
                    t % 2,
                    1,
                );
                for _ in 0..5 {
                    case.check::<f32, f32>(env, 1 + (t as usize % 2));
                }
            });
        }
    });
}
