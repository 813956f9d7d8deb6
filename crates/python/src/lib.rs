//! `adanorm_onnx._native`, the Python package's one native file. It is three things at once:
//! - the command line, run in the Python process by the `adanorm-onnx` console script (`main`);
//! - the Python API's engine: `execute` runs one command and returns its `--json` report, errors
//!   raised as `NativeError(message, file, node)` (the package turns them into
//!   `adanorm_onnx.Error`);
//! - the ONNX Runtime custom-op library: it exports `RegisterCustomOps` (`adanorm-ort`'s), so
//!   `SessionOptions.register_custom_ops_library(<this file>)` works in a Python process, as
//!   onnxruntime-extensions' module does. (Outside Python the file cannot be loaded: it needs the
//!   interpreter's symbols. The wheel carries a plain `libadanorm_ort.so` for that.)

use adanorm_onnx::cli::{execute as execute_cli, Cli};
use clap::Parser;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

/// Referenced so that the linker keeps onnxruntime's entry point in this cdylib's exports.
pub use adanorm_ort::RegisterCustomOps;

create_exception!(
    _native,
    NativeError,
    PyException,
    "A failed command: args are (message, file or None, node or None)."
);

/// Runs the command line with `argv` (the program name first); returns the exit status.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(|| adanorm_onnx::entry::main_with(argv))
}

/// Runs one command given as `argv` (the program name first; `--json` for a report) and returns
/// `(exit status, report as JSON text or None)`.
#[pyfunction]
fn execute(py: Python<'_>, argv: Vec<String>) -> PyResult<(i32, Option<String>)> {
    let cli = Cli::try_parse_from(argv)
        .map_err(|e| NativeError::new_err((e.to_string(), None::<String>, None::<String>)))?;
    let outcome = py.detach(|| std::panic::catch_unwind(|| execute_cli(cli)));
    match outcome {
        Ok(Ok((code, report))) => Ok((code, report.map(|r| r.to_string()))),
        Ok(Err(e)) => {
            let mut message = e.message.clone();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            let file = e.file.as_ref().map(|f| f.display().to_string());
            Err(NativeError::new_err((message, file, e.node.clone())))
        }
        Err(_) => Err(NativeError::new_err((
            "internal error (a bug in adanorm-onnx; please report it with the model)".to_string(),
            None::<String>,
            None::<String>,
        ))),
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(execute, m)?)?;
    Ok(())
}
