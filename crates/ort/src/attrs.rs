//! A node's attributes and name, read from the `OrtKernelInfo` when a session creates the kernel.
//!
//! `KernelInfoGetAttribute_float` fails the same way for a missing attribute and for one of
//! another type, so after a failure the other getters probe whether the name exists at all:
//! missing means the spec's default, present with the wrong type is an error (never a silent
//! default).

use std::ffi::{c_char, CString};

use ort_sys::{OrtKernelInfo, OrtTypeInfo};

use crate::api::Api;
use crate::elem::type_name;
use crate::status::Error;
use crate::tensor::{read_type_shape, TypeShape};

/// Read access to one node's `OrtKernelInfo`.
pub struct NodeInfo {
    api: Api,
    info: *const OrtKernelInfo,
}

impl NodeInfo {
    /// # Safety
    /// `info` must be live for as long as the `NodeInfo` is used (the `CreateKernelV2` call).
    pub unsafe fn new(api: Api, info: *const OrtKernelInfo) -> NodeInfo {
        NodeInfo { api, info }
    }

    /// The node's name (may be empty).
    pub fn node_name(&self) -> Result<String, Error> {
        let a = self.api.get();
        // SAFETY: `info` is live; the getter writes at most `size` bytes.
        unsafe { self.string_with(|buf, size| (a.KernelInfo_GetNodeName)(self.info, buf, size)) }
    }

    /// The name of output `index`, if the node has one there.
    pub fn output_name(&self, index: usize) -> Option<String> {
        let a = self.api.get();
        // SAFETY: as in `node_name`; an out-of-range index is an error status, not UB.
        unsafe {
            self.string_with(|buf, size| (a.KernelInfo_GetOutputName)(self.info, index, buf, size))
        }
        .ok()
    }

    /// The name of input `index`, if the node lists one there (empty for a skipped optional one).
    pub fn input_name(&self, index: usize) -> Option<String> {
        let a = self.api.get();
        // SAFETY: as in `node_name`; an out-of-range index is an error status, not UB.
        unsafe {
            self.string_with(|buf, size| (a.KernelInfo_GetInputName)(self.info, index, buf, size))
        }
        .ok()
    }

    /// A float attribute, `default` when absent.
    pub fn float(&self, name: &str, default: f32) -> Result<f32, Error> {
        let a = self.api.get();
        let cname = c_name(name);
        let mut value = 0f32;
        // SAFETY: `info` is live.
        let st = unsafe { (a.KernelInfoGetAttribute_float)(self.info, cname.as_ptr(), &mut value) };
        match self.api.check(st) {
            Ok(()) => Ok(value),
            Err(_) => self.absent_or_mistyped(name, "a float", default),
        }
    }

    /// An int attribute, `default` when absent.
    pub fn int(&self, name: &str, default: i64) -> Result<i64, Error> {
        let a = self.api.get();
        let cname = c_name(name);
        let mut value = 0i64;
        // SAFETY: `info` is live.
        let st = unsafe { (a.KernelInfoGetAttribute_int64)(self.info, cname.as_ptr(), &mut value) };
        match self.api.check(st) {
            Ok(()) => Ok(value),
            Err(_) => self.absent_or_mistyped(name, "an int", default),
        }
    }

    /// A string attribute, `None` when absent or not a string.
    pub fn string(&self, name: &str) -> Option<String> {
        let a = self.api.get();
        let cname = c_name(name);
        // SAFETY: `info` is live.
        unsafe {
            self.string_with(|buf, size| {
                (a.KernelInfoGetAttribute_string)(self.info, cname.as_ptr(), buf, size)
            })
        }
        .ok()
    }

    /// Number of inputs the node lists (including empty names for skipped optional ones).
    pub fn input_count(&self) -> Result<usize, Error> {
        let a = self.api.get();
        let mut n = 0usize;
        // SAFETY: `info` is live.
        unsafe {
            self.api
                .check((a.KernelInfo_GetInputCount)(self.info, &mut n))?
        };
        Ok(n)
    }

    /// The declared tensor type and shape of input `index`, when the graph gives one.
    pub fn input_type_shape(&self, index: usize) -> Option<TypeShape> {
        let a = self.api.get();
        let mut type_info: *mut OrtTypeInfo = std::ptr::null_mut();
        // SAFETY: `info` is live; an absent input or one without a type is an error status.
        unsafe {
            self.api.check((a.KernelInfo_GetInputTypeInfo)(
                self.info,
                index,
                &mut type_info,
            ))
        }
        .ok()?;
        let mut tensor_info = std::ptr::null();
        // SAFETY: `type_info` is ours until released; the tensor info it yields is borrowed from it.
        let ts = unsafe {
            self.api
                .check((a.CastTypeInfoToTensorInfo)(type_info, &mut tensor_info))
                .ok()
                .filter(|_| !tensor_info.is_null())
                .and_then(|_| read_type_shape(self.api, tensor_info).ok())
        };
        // SAFETY: we own `type_info` and do not use it (or `tensor_info`) afterwards.
        unsafe { (a.ReleaseTypeInfo)(type_info) };
        ts
    }

    /// After a typed getter failed: the default if `name` is absent, an error naming the type
    /// found if it exists with another type.
    fn absent_or_mistyped<T>(&self, name: &str, wanted: &str, default: T) -> Result<T, Error> {
        match self.kind_of(name) {
            None => Ok(default),
            Some(found) => Err(Error::invalid(format!(
                "attribute '{name}' must be {wanted}, the node gives {found}"
            ))),
        }
    }

    /// What kind of attribute `name` is, among the kinds the typed getters can read.
    fn kind_of(&self, name: &str) -> Option<&'static str> {
        let a = self.api.get();
        let cname = c_name(name);
        let (mut f, mut i, mut size) = (0f32, 0i64, 0usize);
        // SAFETY: `info` is live; array getters with a NULL buffer only report the size.
        unsafe {
            if self
                .api
                .check((a.KernelInfoGetAttribute_float)(
                    self.info,
                    cname.as_ptr(),
                    &mut f,
                ))
                .is_ok()
            {
                return Some("a float");
            }
            if self
                .api
                .check((a.KernelInfoGetAttribute_int64)(
                    self.info,
                    cname.as_ptr(),
                    &mut i,
                ))
                .is_ok()
            {
                return Some("an int");
            }
            let st = (a.KernelInfoGetAttribute_string)(
                self.info,
                cname.as_ptr(),
                std::ptr::null_mut(),
                &mut size,
            );
            if self.api.check(st).is_ok() {
                return Some("a string");
            }
            let st = (a.KernelInfoGetAttributeArray_float)(
                self.info,
                cname.as_ptr(),
                std::ptr::null_mut(),
                &mut size,
            );
            if self.api.check(st).is_ok() {
                return Some("a list of floats");
            }
            let st = (a.KernelInfoGetAttributeArray_int64)(
                self.info,
                cname.as_ptr(),
                std::ptr::null_mut(),
                &mut size,
            );
            if self.api.check(st).is_ok() {
                return Some("a list of ints");
            }
        }
        None
    }

    /// Runs a C "query size, then fill" string getter.
    ///
    /// # Safety
    /// `get(buf, size)` must follow onnxruntime's convention: with a NULL `buf` it stores the
    /// needed size (including the NUL), otherwise it writes at most `*size` bytes.
    unsafe fn string_with(
        &self,
        get: impl Fn(*mut c_char, *mut usize) -> ort_sys::OrtStatusPtr,
    ) -> Result<String, Error> {
        let mut size = 0usize;
        self.api.check(get(std::ptr::null_mut(), &mut size))?;
        let mut buf = vec![0u8; size.max(1)];
        size = buf.len();
        self.api.check(get(buf.as_mut_ptr().cast(), &mut size))?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }
}

/// An attribute name as a C string (names are ours, without NULs).
fn c_name(name: &str) -> CString {
    CString::new(name).expect("attribute names have no NUL")
}

/// How a node introduces itself in messages: `AdaNorm node 'ln0'`, or by its first output when
/// the node has no name.
pub fn node_label(op: &str, name: &str, first_output: Option<&str>) -> String {
    match (name.is_empty(), first_output) {
        (false, _) => format!("{op} node '{name}'"),
        (true, Some(out)) if !out.is_empty() => format!("{op} node with no name (output '{out}')"),
        (true, _) => format!("{op} node with no name"),
    }
}

/// The message for an input whose element type is not `X`'s.
pub fn type_mismatch(what: &str, found: i32, x: i32) -> String {
    format!(
        "{}: {what} is {}, X is {}",
        adanorm_kernels::params::rule::TYPE,
        type_name(found),
        type_name(x)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_node_or_its_output() {
        assert_eq!(
            node_label("AdaNorm", "ln0", Some("y")),
            "AdaNorm node 'ln0'"
        );
        assert_eq!(
            node_label("LayerNormSimple", "", Some("y")),
            "LayerNormSimple node with no name (output 'y')"
        );
        assert_eq!(node_label("AdaNorm", "", None), "AdaNorm node with no name");
    }

    #[test]
    fn type_mismatch_names_the_rule() {
        assert_eq!(
            type_mismatch("Scale", 11, 1),
            "all inputs must share one type among float, float16, bfloat16, double: Scale is double, X is float"
        );
    }
}
