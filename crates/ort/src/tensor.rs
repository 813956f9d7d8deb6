//! Tensors as onnxruntime hands them to a kernel: element type, dims, and data as slices (CPU)
//! or raw device pointers (GPU).

use std::ffi::c_void;
use std::ptr::NonNull;

use ort_sys::{
    ONNXTensorElementDataType, OrtKernelContext, OrtMemoryInfo, OrtTensorTypeAndShapeInfo, OrtValue,
};

use crate::api::Api;
use crate::status::Error;

/// Element type code and dims; `-1` marks an unknown dim (declared shapes only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeShape {
    pub elem: i32,
    pub dims: Vec<i64>,
}

/// Reads a type-and-shape record without releasing it.
///
/// # Safety
/// `info` must be a live `OrtTensorTypeAndShapeInfo`.
pub unsafe fn read_type_shape(
    api: Api,
    info: *const OrtTensorTypeAndShapeInfo,
) -> Result<TypeShape, Error> {
    let a = api.get();
    let mut elem = 0i32;
    let mut rank = 0usize;
    // SAFETY: `info` is live; the element type is written as the C enum's int, read back as i32 so
    // a type code newer than ort-sys knows cannot become an invalid Rust enum.
    unsafe {
        api.check((a.GetTensorElementType)(
            info,
            (&mut elem as *mut i32).cast::<ONNXTensorElementDataType>(),
        ))?;
        api.check((a.GetDimensionsCount)(info, &mut rank))?;
    }
    let mut dims = vec![0i64; rank];
    // SAFETY: `dims` holds `rank` slots.
    unsafe { api.check((a.GetDimensions)(info, dims.as_mut_ptr(), rank))? };
    Ok(TypeShape { elem, dims })
}

/// Dims of a concrete tensor as `usize`.
pub fn concrete_dims(dims: &[i64]) -> Result<Vec<usize>, Error> {
    dims.iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| Error::internal(format!("tensor has a negative dim: {dims:?}")))
        })
        .collect()
}

/// The inputs and outputs of one `KernelComputeV2` call.
pub struct KernelIo {
    api: Api,
    ctx: *mut OrtKernelContext,
}

/// A present input tensor.
pub struct Input {
    pub ts: TypeShape,
    pub shape: Vec<usize>,
    value: *const OrtValue,
    data: *const c_void,
    len: usize,
}

/// An output tensor onnxruntime allocated for us.
pub struct Output {
    data: *mut c_void,
    len: usize,
}

impl KernelIo {
    /// # Safety
    /// `ctx` must be the context of the running compute call, and the `KernelIo` must not outlive it.
    pub unsafe fn new(api: Api, ctx: *mut OrtKernelContext) -> KernelIo {
        KernelIo { api, ctx }
    }

    pub fn context(&self) -> *mut OrtKernelContext {
        self.ctx
    }

    pub fn api(&self) -> Api {
        self.api
    }

    /// The `cudaStream_t` a GPU provider runs this node on (NULL: the legacy default stream).
    pub fn gpu_stream(&self) -> Result<*mut c_void, Error> {
        let mut stream: *mut c_void = std::ptr::null_mut();
        // SAFETY: `ctx` is live for the compute call; onnxruntime writes the stream handle.
        unsafe {
            self.api
                .check((self.api.get().KernelContext_GetGPUComputeStream)(
                    self.ctx,
                    &mut stream,
                ))?
        };
        Ok(stream)
    }

    /// Input `index`, or `None` when the node leaves it out (an empty name or off the end).
    pub fn input(&self, index: usize) -> Result<Option<Input>, Error> {
        let a = self.api.get();
        let mut count = 0usize;
        // SAFETY: `ctx` is live for the compute call (constructor contract).
        unsafe {
            self.api
                .check((a.KernelContext_GetInputCount)(self.ctx, &mut count))?
        };
        if index >= count {
            return Ok(None);
        }
        let mut value: *const OrtValue = std::ptr::null();
        // SAFETY: `index < count`; an absent optional input comes back as NULL.
        unsafe {
            self.api
                .check((a.KernelContext_GetInput)(self.ctx, index, &mut value))?
        };
        if value.is_null() {
            return Ok(None);
        }
        // SAFETY: `value` is a live input tensor owned by onnxruntime for the call.
        let ts = unsafe { value_type_shape(self.api, value) }?;
        let shape = concrete_dims(&ts.dims)?;
        let len = element_count(&shape)?;
        let mut data: *mut c_void = std::ptr::null_mut();
        // SAFETY: as above. GetTensorMutableData is the API-17 way to read any tensor's data; the
        // kernel only reads through it.
        unsafe {
            self.api
                .check((a.GetTensorMutableData)(value.cast_mut(), &mut data))?
        };
        Ok(Some(Input {
            ts,
            shape,
            value,
            data,
            len,
        }))
    }

    /// Output `index` allocated with `dims`, or `None` when the node does not use it.
    pub fn output(&self, index: usize, dims: &[usize]) -> Result<Option<Output>, Error> {
        let a = self.api.get();
        let mut count = 0usize;
        // SAFETY: `ctx` is live for the compute call.
        unsafe {
            self.api
                .check((a.KernelContext_GetOutputCount)(self.ctx, &mut count))?
        };
        if index >= count {
            return Ok(None);
        }
        let dims_i64: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        let len = element_count(dims)?;
        let mut value: *mut OrtValue = std::ptr::null_mut();
        // SAFETY: `index < count`; an unused optional output comes back as NULL.
        unsafe {
            self.api.check((a.KernelContext_GetOutput)(
                self.ctx,
                index,
                dims_i64.as_ptr(),
                dims_i64.len(),
                &mut value,
            ))?
        };
        if value.is_null() {
            return Ok(None);
        }
        let mut data: *mut c_void = std::ptr::null_mut();
        // SAFETY: `value` is the output tensor onnxruntime just allocated.
        unsafe { self.api.check((a.GetTensorMutableData)(value, &mut data))? };
        Ok(Some(Output { data, len }))
    }
}

/// Type and dims of a tensor value.
///
/// # Safety
/// `value` must be a live tensor `OrtValue`.
unsafe fn value_type_shape(api: Api, value: *const OrtValue) -> Result<TypeShape, Error> {
    let a = api.get();
    let mut info: *mut OrtTensorTypeAndShapeInfo = std::ptr::null_mut();
    // SAFETY: per the contract; we release `info` below.
    unsafe { api.check((a.GetTensorTypeAndShape)(value, &mut info))? };
    // SAFETY: `info` is live until released.
    let ts = unsafe { read_type_shape(api, info) };
    // SAFETY: we own `info` and do not use it afterwards.
    unsafe { (a.ReleaseTensorTypeAndShapeInfo)(info) };
    ts
}

fn element_count(shape: &[usize]) -> Result<usize, Error> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::internal(format!("tensor element count overflows: {shape:?}")))
}

/// `len` elements of `T` at `data` as a slice; an empty slice needs no (possibly NULL) pointer.
///
/// # Safety
/// When `len > 0`, `data` must point to `len` initialised `T` valid for `'a` and not written
/// through any other path during `'a`.
unsafe fn slice<'a, T>(data: *const c_void, len: usize) -> Result<&'a [T], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    let ptr = checked_ptr::<T>(data.cast_mut())?;
    // SAFETY: per the contract; `ptr` is non-null and aligned.
    Ok(unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len) })
}

/// # Safety
/// As [`slice`], and no other reference to the memory may exist during `'a`.
unsafe fn slice_mut<'a, T>(data: *mut c_void, len: usize) -> Result<&'a mut [T], Error> {
    if len == 0 {
        return Ok(&mut []);
    }
    let ptr = checked_ptr::<T>(data)?;
    // SAFETY: per the contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), len) })
}

fn checked_ptr<T>(data: *mut c_void) -> Result<NonNull<T>, Error> {
    let ptr = NonNull::new(data.cast::<T>()).ok_or_else(|| {
        Error::internal("onnxruntime returned a NULL data pointer for a non-empty tensor")
    })?;
    if !ptr.as_ptr().is_aligned() {
        return Err(Error::internal(format!(
            "tensor data at {:p} is not aligned to {} bytes",
            ptr.as_ptr(),
            std::mem::align_of::<T>()
        )));
    }
    Ok(ptr)
}

impl Input {
    /// Where the data lives, never dereferenced here: on a GPU provider a device pointer.
    pub fn raw(&self) -> *const c_void {
        self.data
    }

    /// The `OrtMemoryInfo` of the tensor's allocation, owned by onnxruntime (valid for the call).
    pub fn memory_info(&self, api: Api) -> Result<*const OrtMemoryInfo, Error> {
        let mut info: *const OrtMemoryInfo = std::ptr::null();
        // SAFETY: `value` is a live input tensor for the compute call; onnxruntime writes a
        // pointer it keeps owning.
        unsafe { api.check((api.get().GetTensorMemoryInfo)(self.value, &mut info))? };
        Ok(info)
    }

    /// The data as `T`; the caller has checked `ts.elem` against `T`.
    ///
    /// # Safety
    /// `T` must be the tensor's element type, and the slice must not outlive the compute call.
    pub unsafe fn data<T>(&self) -> Result<&[T], Error> {
        // SAFETY: onnxruntime keeps input data alive and unchanged during the call.
        unsafe { slice(self.data, self.len) }
    }
}

impl Output {
    /// Where the data lives, never dereferenced here: on a GPU provider a device pointer.
    pub fn raw(&mut self) -> *mut c_void {
        self.data
    }

    /// The data as `T`.
    ///
    /// # Safety
    /// `T` must be the type the output was declared with, and the slice must not outlive the
    /// compute call. Each output is a separate allocation no input aliases (no in-place hints are
    /// registered).
    pub unsafe fn data<T>(&mut self) -> Result<&mut [T], Error> {
        // SAFETY: per the contract.
        unsafe { slice_mut(self.data, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_slices_need_no_pointer() {
        // SAFETY: len 0 never dereferences.
        let s: &[f32] = unsafe { slice(std::ptr::null(), 0) }.unwrap();
        assert!(s.is_empty());
        // SAFETY: as above.
        let s: &mut [f64] = unsafe { slice_mut(std::ptr::null_mut(), 0) }.unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn null_and_misaligned_pointers_are_errors() {
        // SAFETY: the pointer is checked before use and rejected.
        assert!(unsafe { slice::<f32>(std::ptr::null(), 4) }.is_err());
        let buf = [0u64; 4];
        let odd = (buf.as_ptr() as *const u8).wrapping_add(1).cast::<c_void>();
        // SAFETY: as above.
        let err = unsafe { slice::<f32>(odd, 2) }.unwrap_err();
        assert!(err.message.contains("not aligned"), "{err}");
        // SAFETY: `buf` holds 8 valid, aligned f32s.
        let ok = unsafe { slice::<f32>(buf.as_ptr().cast(), 8) }.unwrap();
        assert_eq!(ok, &[0.0; 8]);
    }

    #[test]
    fn dims_must_be_concrete() {
        assert_eq!(concrete_dims(&[2, 0, 3]).unwrap(), vec![2, 0, 3]);
        assert!(concrete_dims(&[2, -1]).is_err());
        assert_eq!(element_count(&[2, 0, 3]).unwrap(), 0);
        assert!(element_count(&[usize::MAX, 2]).is_err());
    }
}
