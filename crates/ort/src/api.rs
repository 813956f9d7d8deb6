//! The host's `OrtApi`: which C API version the library asks for, what older runtimes get instead,
//! and checked calls into it.
//!
//! The library never links onnxruntime. Every function it calls comes from the `OrtApi` table the
//! host passes to `RegisterCustomOps` (and again to each `CreateKernelV2`), so one build works with
//! every onnxruntime from [`MIN_ORT_VERSION`] on.

use std::ffi::{c_char, CStr, CString};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use ort_sys::{OrtApi, OrtApiBase, OrtErrorCode, OrtStatus, OrtStatusPtr};

use crate::status::Error;

/// The C API version the library is written against and requests from the host.
///
/// 17 (onnxruntime 1.17) is the first with everything used here: `CreateKernelV2` /
/// `KernelComputeV2` (16), `InferOutputShapeFn`, the `ShapeInferContext_*` functions and
/// `KernelContext_ParallelFor` (17). It is also the `version` of every `OrtCustomOp` we hand out,
/// which tells onnxruntime which struct fields exist.
pub const API_VERSION: u32 = 17;

/// The onnxruntime release that introduced [`API_VERSION`], for messages.
pub const MIN_ORT_VERSION: &str = "1.17";

/// The `OrtApi` table of the onnxruntime that loaded us.
///
/// It lives in onnxruntime's static data, so it outlives every call onnxruntime makes into us.
#[derive(Clone, Copy)]
pub struct Api(NonNull<OrtApi>);

// SAFETY: the table is immutable function pointers; onnxruntime documents the C API as callable
// from any thread.
unsafe impl Send for Api {}
// SAFETY: as above.
unsafe impl Sync for Api {}

/// The first onnxruntime that survives `InferOutputShapeFn` on a node with a skipped optional
/// input; see `op::ops`.
pub const SHAPE_INFERENCE_MIN_VERSION: (u32, u32) = (1, 24);

/// The API of the most recent `RegisterCustomOps`, for the one callback that gets no `OrtApi`
/// argument (`InferOutputShapeFn`). This assumes one onnxruntime per process, as every host has;
/// kernels keep the `OrtApi` their runtime passes to `CreateKernelV2`.
static REGISTERED: AtomicPtr<OrtApi> = AtomicPtr::new(std::ptr::null_mut());

/// `1000 * major + minor` of the onnxruntime of the most recent `RegisterCustomOps` (0: unknown),
/// for code that calls functions newer than [`API_VERSION`] (same one-runtime assumption).
static REGISTERED_VERSION: AtomicU32 = AtomicU32::new(0);

impl Api {
    /// Asks `base` for [`API_VERSION`].
    ///
    /// On an onnxruntime older than 1.17 `GetApi(17)` returns NULL. The error then comes back as a
    /// status built with `GetApi(1)`, whose first member, `CreateStatus`, every version has, so the
    /// user sees why instead of a later "not a registered function/op". The `Err` status is owned
    /// by the caller (to be returned to onnxruntime).
    ///
    /// # Safety
    /// `base` must be NULL or the `OrtApiBase` onnxruntime passed to `RegisterCustomOps`.
    pub unsafe fn from_base(base: *const OrtApiBase) -> Result<Api, OrtStatusPtr> {
        // SAFETY: per the contract, `base` is NULL or a valid OrtApiBase.
        let Some(base) = (unsafe { base.as_ref() }) else {
            // Nothing to build a status with; onnxruntime never passes NULL.
            return Err(OrtStatusPtr::default());
        };
        // SAFETY: GetApi accepts any version number and returns NULL for unsupported ones.
        let api = unsafe { (base.GetApi)(API_VERSION) };
        if let Some(api) = NonNull::new(api.cast_mut()) {
            return Ok(Api(api));
        }
        // SAFETY: GetVersionString returns a static NUL-terminated string (or NULL).
        let version = unsafe { c_str_lossy((base.GetVersionString)()) };
        let message = format!(
            "the ai.adanorm custom-op library (libadanorm_ort) needs ONNX Runtime >= \
             {MIN_ORT_VERSION} (C API {API_VERSION}); this process runs onnxruntime {version}. \
             Upgrade onnxruntime (pip install -U onnxruntime)."
        );
        // SAFETY: API version 1 exists in every onnxruntime.
        let v1 = unsafe { (base.GetApi)(1) };
        match NonNull::new(v1.cast_mut()) {
            Some(v1) => Err(Api(v1).status(OrtErrorCode::ORT_FAIL, &message)),
            None => Err(OrtStatusPtr::default()),
        }
    }

    /// The runtime's `(major, minor)` version from `GetVersionString`, if it parses.
    ///
    /// Read from the string rather than probed with `GetApi(n)`, which makes older runtimes log
    /// "The requested API version \[n\] is not available".
    ///
    /// # Safety
    /// As [`Api::from_base`].
    pub unsafe fn runtime_version(base: *const OrtApiBase) -> Option<(u32, u32)> {
        // SAFETY: per the contract.
        let base = unsafe { base.as_ref() }?;
        // SAFETY: GetVersionString returns a static NUL-terminated string (or NULL).
        parse_version(&unsafe { c_str_lossy((base.GetVersionString)()) })
    }

    /// Wraps the `api` argument of a callback.
    pub fn from_ptr(api: *const OrtApi) -> Option<Api> {
        NonNull::new(api.cast_mut()).map(Api)
    }

    /// Remembers `self` and the runtime's version for [`Api::registered`] and
    /// [`Api::registered_version`].
    pub fn set_registered(self, version: Option<(u32, u32)>) {
        let packed = version.map_or(0, |(major, minor)| major * 1000 + minor);
        REGISTERED_VERSION.store(packed, Ordering::Release);
        REGISTERED.store(self.0.as_ptr(), Ordering::Release);
    }

    /// The `(major, minor)` of the runtime that registered the library, if known.
    pub fn registered_version() -> Option<(u32, u32)> {
        match REGISTERED_VERSION.load(Ordering::Acquire) {
            0 => None,
            v => Some((v / 1000, v % 1000)),
        }
    }

    /// The API of the most recent registration, if any.
    pub fn registered() -> Option<Api> {
        Api::from_ptr(REGISTERED.load(Ordering::Acquire))
    }

    /// The table's address, for entries newer than ort-sys declares (see `cuda.rs`).
    pub fn as_ptr(&self) -> *const OrtApi {
        self.0.as_ptr()
    }

    /// The function table.
    pub fn get(&self) -> &OrtApi {
        // SAFETY: the pointer came from GetApi(API_VERSION) (or GetApi(1), for which only
        // `CreateStatus` is ever read), so the table holds at least every API-17 member, which is
        // all ort-sys declares without its `api-18`+ features.
        unsafe { self.0.as_ref() }
    }

    /// A new status for onnxruntime to own. Interior NULs, which C cannot carry, become spaces.
    pub fn status(&self, code: OrtErrorCode, message: &str) -> OrtStatusPtr {
        let message =
            CString::new(message.replace('\0', " ")).expect("interior NULs were replaced");
        // SAFETY: CreateStatus copies the NUL-terminated message.
        unsafe { (self.get().CreateStatus)(code, message.as_ptr()) }
    }

    /// Turns a status returned by an API call into a `Result`, releasing it.
    pub fn check(&self, status: OrtStatusPtr) -> Result<(), Error> {
        let Some(status) = NonNull::new(status.0) else {
            return Ok(());
        };
        let api = self.get();
        // `GetErrorCode` is declared to return the ort-sys enum; read the raw int instead, so a code
        // added by a newer onnxruntime cannot become an invalid enum value.
        // SAFETY: same C signature; `OrtErrorCode` is `repr(i32)`.
        let get_code: unsafe extern "system" fn(*const OrtStatus) -> i32 =
            unsafe { std::mem::transmute(api.GetErrorCode) };
        // SAFETY: `status` is a live status owned by us until ReleaseStatus below.
        let (code, message) = unsafe {
            (
                get_code(status.as_ptr()),
                c_str_lossy((api.GetErrorMessage)(status.as_ptr())),
            )
        };
        // SAFETY: we own the status and do not use it afterwards.
        unsafe { (api.ReleaseStatus)(status.as_ptr()) };
        Err(Error::new(error_code_from_raw(code), message))
    }
}

/// The error code for a raw value from onnxruntime; unknown values become `ORT_FAIL`.
pub fn error_code_from_raw(code: i32) -> OrtErrorCode {
    use OrtErrorCode::*;
    const KNOWN: [OrtErrorCode; 16] = [
        ORT_OK,
        ORT_FAIL,
        ORT_INVALID_ARGUMENT,
        ORT_NO_SUCHFILE,
        ORT_NO_MODEL,
        ORT_ENGINE_ERROR,
        ORT_RUNTIME_EXCEPTION,
        ORT_INVALID_PROTOBUF,
        ORT_MODEL_LOADED,
        ORT_NOT_IMPLEMENTED,
        ORT_INVALID_GRAPH,
        ORT_EP_FAIL,
        ORT_MODEL_LOAD_CANCELED,
        ORT_MODEL_REQUIRES_COMPILATION,
        ORT_NOT_FOUND,
        ORT_DEVICE_RESET,
    ];
    KNOWN
        .into_iter()
        .find(|&c| c as i32 == code && c != ORT_OK)
        .unwrap_or(ORT_FAIL)
}

/// `"1.23.2"` (or `"1.24.0-dev"`) as `(1, 23)`.
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// A C string as UTF-8 (lossy); NULL reads as `"?"`.
///
/// # Safety
/// `s` must be NULL or point to a NUL-terminated string that stays valid during the call.
pub unsafe fn c_str_lossy(s: *const c_char) -> String {
    if s.is_null() {
        return "?".to_owned();
    }
    // SAFETY: per the contract.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_error_codes_become_fail() {
        assert_eq!(error_code_from_raw(2), OrtErrorCode::ORT_INVALID_ARGUMENT);
        assert_eq!(error_code_from_raw(6), OrtErrorCode::ORT_RUNTIME_EXCEPTION);
        assert_eq!(error_code_from_raw(0), OrtErrorCode::ORT_FAIL);
        assert_eq!(error_code_from_raw(99), OrtErrorCode::ORT_FAIL);
        assert_eq!(error_code_from_raw(-1), OrtErrorCode::ORT_FAIL);
    }

    #[test]
    fn versions_parse_to_major_minor() {
        assert_eq!(parse_version("1.23.2"), Some((1, 23)));
        assert_eq!(parse_version("1.24.0-dev"), Some((1, 24)));
        assert_eq!(parse_version("2.0"), Some((2, 0)));
        assert!(parse_version("1.24.0") >= Some(SHAPE_INFERENCE_MIN_VERSION));
        assert!(parse_version("1.9.0") < Some(SHAPE_INFERENCE_MIN_VERSION));
        assert_eq!(parse_version("?"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn null_c_string_reads_as_question_mark() {
        // SAFETY: NULL is allowed.
        assert_eq!(unsafe { c_str_lossy(std::ptr::null()) }, "?");
        // SAFETY: a static C string.
        assert_eq!(unsafe { c_str_lossy(c"1.32.0".as_ptr()) }, "1.32.0");
    }

    #[test]
    fn null_base_gives_null_status() {
        // SAFETY: NULL is allowed.
        let err = unsafe { Api::from_base(std::ptr::null()) }.err().unwrap();
        assert!(err.0.is_null());
    }
}
