//! `RegisterCustomOps`, the library's entry point: onnxruntime calls it once per
//! `register_custom_ops_library` / `RegisterCustomOpsLibrary_V2` on a set of session options.

use std::ffi::CString;

use adanorm_kernels::params::DOMAIN;
use ort_sys::{OrtApiBase, OrtCustomOpDomain, OrtSessionOptions, OrtStatusPtr};

use crate::api::{Api, SHAPE_INFERENCE_MIN_VERSION};
use crate::op::{cuda_ops, ops};
use crate::status::{guard_status, Error};

/// Adds domain `ai.adanorm` (opset 1) with every record of [`ops`] to `options`, and those of
/// [`cuda_ops`] where this process can run them.
///
/// On an onnxruntime older than 1.17 it returns an error status saying so (see `Api::from_base`).
/// The domain is deliberately never released: onnxruntime keeps a pointer to it in the options
/// and in every session made from them, and gives no signal when the last one is gone, so it must
/// outlive them all. That costs a few bytes per registration.
///
/// # Safety
/// Called by onnxruntime with valid `options` and `api_base`.
#[no_mangle]
pub unsafe extern "C" fn RegisterCustomOps(
    options: *mut OrtSessionOptions,
    api_base: *const OrtApiBase,
) -> OrtStatusPtr {
    // SAFETY: onnxruntime passes its OrtApiBase.
    let api = match unsafe { Api::from_base(api_base) } {
        Ok(api) => api,
        Err(status) => return status,
    };
    // SAFETY: as above.
    let version = unsafe { Api::runtime_version(api_base) };
    let shape_inference = version.is_some_and(|v| v >= SHAPE_INFERENCE_MIN_VERSION);
    guard_status(Some(api), || {
        api.set_registered(version);
        let a = api.get();
        let domain_name = CString::new(DOMAIN).expect("the domain has no NUL");
        let mut domain: *mut OrtCustomOpDomain = std::ptr::null_mut();
        // SAFETY: CreateCustomOpDomain copies the name and hands us a new domain.
        unsafe { api.check((a.CreateCustomOpDomain)(domain_name.as_ptr(), &mut domain))? };
        // The CUDA records only where they can run (`cuda::registration`).
        let cuda: &[_] = match crate::cuda::registration() {
            Ok(_) => cuda_ops(shape_inference),
            Err(_) => &[],
        };
        for op in ops(shape_inference).iter().chain(cuda) {
            // SAFETY: `domain` is live; the record is static and outlives every session.
            unsafe { api.check((a.CustomOpDomain_Add)(domain, op.as_ort())) }.map_err(|e| {
                e.context(&"RegisterCustomOps: adding an op to domain 'ai.adanorm'")
            })?;
        }
        // SAFETY: `options` is live; on success onnxruntime keeps (but does not own) `domain`.
        unsafe { api.check((a.AddCustomOpDomain)(options, domain)) }
            .map_err(|e: Error| e.context(&"RegisterCustomOps: adding domain 'ai.adanorm'"))
    })
}
