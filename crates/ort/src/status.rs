//! Errors and the one place they cross the C boundary.
//!
//! Every `extern` callback body runs inside [`guard_status`] or [`guard_value`]: a Rust error
//! becomes an `OrtStatus` onnxruntime raises (a Python exception, a C++ `Ort::Exception`), and a
//! panic is caught and reported the same way instead of aborting the host process.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use adanorm_kernels::SpecError;
use ort_sys::{OrtErrorCode, OrtStatusPtr};

use crate::api::Api;

/// An error on its way to onnxruntime: the code it becomes and the full message.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub code: OrtErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: OrtErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    /// The user's model or inputs break the operator contract.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(OrtErrorCode::ORT_INVALID_ARGUMENT, message)
    }

    /// Something this library did not expect (a bug, an onnxruntime call failing).
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(OrtErrorCode::ORT_RUNTIME_EXCEPTION, message)
    }

    /// Prefixes the message with `who` (the node), as `"{who}: {message}"`.
    pub fn context(mut self, who: &dyn fmt::Display) -> Error {
        self.message = format!("{who}: {}", self.message);
        self
    }

    /// A panic payload as an error.
    pub fn from_panic(payload: Box<dyn Any + Send>) -> Error {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        Error::internal(format!(
            "internal error in libadanorm_ort (a Rust panic, caught at the library boundary; \
             please report it): {what}"
        ))
    }
}

impl From<SpecError> for Error {
    /// A broken rule of `ops-spec.md`; the message starts with the rule.
    fn from(err: SpecError) -> Error {
        Error::invalid(err.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs the body of a status-returning callback: `Ok` is NULL (success), an `Err` or a panic is a
/// new status built with `api`.
///
/// Without an `api` nothing can be reported and the result is NULL; only `InferOutputShapeFn`
/// can be in that position, and onnxruntime ignores its status anyway.
pub fn guard_status(api: Option<Api>, body: impl FnOnce() -> Result<(), Error>) -> OrtStatusPtr {
    let result = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => Err(Error::from_panic(payload)),
    };
    match (result, api) {
        (Ok(()), _) | (Err(_), None) => OrtStatusPtr::default(),
        (Err(err), Some(api)) => api.status(err.code, &err.message),
    }
}

/// Runs the body of a callback that returns a plain value; a panic yields `fallback`.
pub fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Runs `body`, turning a panic into an [`Error`]; for work inside a callback whose panics must be
/// recorded rather than returned directly (thread-pool workers).
pub fn catch<T>(body: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| Err(Error::from_panic(payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        let err = catch::<()>(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(err.code, OrtErrorCode::ORT_RUNTIME_EXCEPTION);
        assert!(err.message.contains("boom 7"), "{err}");
        let err = catch::<()>(|| std::panic::panic_any(5u8)).unwrap_err();
        assert!(err.message.contains("non-string panic payload"), "{err}");
        assert_eq!(catch(|| Ok(3)), Ok(3));
    }

    #[test]
    fn guard_value_falls_back_on_panic() {
        assert_eq!(guard_value(1, || 2), 2);
        assert_eq!(guard_value(1, || panic!("no")), 1);
    }

    #[test]
    fn guard_status_without_api_is_null() {
        assert!(guard_status(None, || Err(Error::invalid("x"))).0.is_null());
        assert!(guard_status(None, || panic!("x")).0.is_null());
        assert!(guard_status(None, || Ok(())).0.is_null());
    }

    #[test]
    fn spec_errors_keep_the_rule_and_get_the_node() {
        let spec = adanorm_kernels::row_layout(&[2, 3], 5).unwrap_err();
        let err = Error::from(spec).context(&"AdaNorm node 'n0'");
        assert_eq!(err.code, OrtErrorCode::ORT_INVALID_ARGUMENT);
        assert_eq!(
            err.message,
            "AdaNorm node 'n0': axis must be in [-r, r): axis = 5 for rank 2"
        );
    }
}
