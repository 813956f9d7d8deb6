//! The `OrtCustomOp` records onnxruntime reads: one per (op, element type, execution provider).
//!
//! onnxruntime merges records that share a name into one schema (the union of their types) and
//! picks the kernel whose declared types match the node, so `AdaNorm` over `float16` and over
//! `double` are two records. Only `X` carries the type; `Scale` and `B` accept any type, so a node
//! mixing types reaches our kernel and gets the contract's message instead of onnxruntime's
//! generic "could not find an implementation".
//!
//! Each execution provider is an [`Ep`] variant with its own records ([`ops`] for the CPU,
//! [`cuda_ops`] for CUDA); the kernel dispatches on it (see `kernel.rs`).
//!
//! Every record covers `ai.adanorm` versions 1 and 2 and declares version 2's five inputs and
//! four outputs (all but `X`/`Y` optional). onnxruntime builds one schema per op name from all
//! its records, requires them to declare the same inputs and outputs, and gives the schema the
//! first record's start version; it then picks kernels by the schema's version, not by the
//! model's import. So a kernel cannot tell which version a model imports, and runs version 2's
//! slots under either (tract, which can tell, refuses them under a version-1 import).

use std::ffi::{c_char, c_int, c_void, CStr};

use ort_sys::{
    ONNXTensorElementDataType, OrtApi, OrtCustomOpInputOutputCharacteristic, OrtKernelContext,
    OrtKernelInfo, OrtMemType, OrtShapeInferContext, OrtStatusPtr,
};

use adanorm_kernels::params::{slot, FIRST_OPSET_VERSION, OPSET_VERSION};

use crate::api::{Api, API_VERSION};
use crate::elem::Elem;
use crate::kernel::Kernel;
use crate::shape;
use crate::status::{guard_status, guard_value, Error};

/// `OrtCustomOp` exactly as C API 17 lays it out.
///
/// ort-sys grows its `OrtCustomOp` with its `api-18`+ features, and cargo unifies features across
/// a build; this copy keeps the layout we promise with `version = 17` fixed whatever else the
/// build enables. onnxruntime reads the fields up to `GetEndVersion` for version 17 and no further.
#[repr(C)]
pub struct AbiCustomOp {
    pub version: u32,
    pub create_kernel: Option<
        unsafe extern "system" fn(
            *const AbiCustomOp,
            *const OrtApi,
            *const OrtKernelInfo,
        ) -> *mut c_void,
    >,
    pub get_name: unsafe extern "system" fn(*const AbiCustomOp) -> *const c_char,
    pub get_execution_provider_type: unsafe extern "system" fn(*const AbiCustomOp) -> *const c_char,
    pub get_input_type:
        unsafe extern "system" fn(*const AbiCustomOp, usize) -> ONNXTensorElementDataType,
    pub get_input_type_count: unsafe extern "system" fn(*const AbiCustomOp) -> usize,
    pub get_output_type:
        unsafe extern "system" fn(*const AbiCustomOp, usize) -> ONNXTensorElementDataType,
    pub get_output_type_count: unsafe extern "system" fn(*const AbiCustomOp) -> usize,
    pub kernel_compute: Option<unsafe extern "system" fn(*mut c_void, *mut OrtKernelContext)>,
    // Called unconditionally when a session drops its kernels: must never be NULL.
    pub kernel_destroy: unsafe extern "system" fn(*mut c_void),
    // Called unconditionally by onnxruntime's schema checks: must never be NULL.
    pub get_input_characteristic: unsafe extern "system" fn(
        *const AbiCustomOp,
        usize,
    )
        -> OrtCustomOpInputOutputCharacteristic,
    pub get_output_characteristic:
        unsafe extern "system" fn(
            *const AbiCustomOp,
            usize,
        ) -> OrtCustomOpInputOutputCharacteristic,
    pub get_input_memory_type: unsafe extern "system" fn(*const AbiCustomOp, usize) -> OrtMemType,
    pub get_variadic_input_min_arity: unsafe extern "system" fn(*const AbiCustomOp) -> c_int,
    pub get_variadic_input_homogeneity: unsafe extern "system" fn(*const AbiCustomOp) -> c_int,
    pub get_variadic_output_min_arity: unsafe extern "system" fn(*const AbiCustomOp) -> c_int,
    pub get_variadic_output_homogeneity: unsafe extern "system" fn(*const AbiCustomOp) -> c_int,
    pub create_kernel_v2: unsafe extern "system" fn(
        *const AbiCustomOp,
        *const OrtApi,
        *const OrtKernelInfo,
        *mut *mut c_void,
    ) -> OrtStatusPtr,
    pub kernel_compute_v2:
        unsafe extern "system" fn(*mut c_void, *mut OrtKernelContext) -> OrtStatusPtr,
    pub infer_output_shape_fn: Option<
        unsafe extern "system" fn(*const AbiCustomOp, *mut OrtShapeInferContext) -> OrtStatusPtr,
    >,
    pub get_start_version: unsafe extern "system" fn(*const AbiCustomOp) -> c_int,
    pub get_end_version: unsafe extern "system" fn(*const AbiCustomOp) -> c_int,
}

/// Which of the two operators: the contract's own type.
pub use adanorm_kernels::params::OpKind;

/// The execution provider a record is registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ep {
    Cpu,
    Cuda,
}

impl Ep {
    /// onnxruntime's name for the provider (`kCpuExecutionProvider`, ...).
    pub const fn name(self) -> &'static CStr {
        match self {
            Ep::Cpu => c"CPUExecutionProvider",
            Ep::Cuda => c"CUDAExecutionProvider",
        }
    }
}

/// One registered record: the C struct onnxruntime reads, then what our callbacks need.
#[repr(C)]
pub struct CustomOp {
    /// First, so the `*const AbiCustomOp` onnxruntime hands back is also a `*const CustomOp`.
    abi: AbiCustomOp,
    pub kind: OpKind,
    pub elem: Elem,
    pub ep: Ep,
}

/// Inputs `X`, `Scale`, `B`, `Skip`, `Bias`; outputs `Y`, `Mean`, `InvStdDev`, `Sum`: version 2's
/// slots (`params::slot::counts(OPSET_VERSION)`), declared by every record (see the module note).
const INPUTS: usize = 5;
const OUTPUTS: usize = 4;

impl CustomOp {
    const fn new(kind: OpKind, elem: Elem, ep: Ep, shape_inference: bool) -> CustomOp {
        CustomOp {
            abi: AbiCustomOp {
                version: API_VERSION,
                create_kernel: None,
                get_name,
                get_execution_provider_type,
                get_input_type,
                get_input_type_count,
                get_output_type,
                get_output_type_count,
                kernel_compute: None,
                kernel_destroy,
                get_input_characteristic,
                get_output_characteristic,
                get_input_memory_type,
                get_variadic_input_min_arity: variadic_min_arity,
                get_variadic_input_homogeneity: variadic_homogeneity,
                get_variadic_output_min_arity: variadic_min_arity,
                get_variadic_output_homogeneity: variadic_homogeneity,
                create_kernel_v2,
                kernel_compute_v2,
                infer_output_shape_fn: if shape_inference {
                    Some(infer_output_shape)
                } else {
                    None
                },
                get_start_version: first_version,
                get_end_version: last_version,
            },
            kind,
            elem,
            ep,
        }
    }

    /// The pointer `CustomOpDomain_Add` takes.
    pub fn as_ort(&'static self) -> *const ort_sys::OrtCustomOp {
        (&self.abi as *const AbiCustomOp).cast()
    }

    /// # Safety
    /// `op` must be a pointer onnxruntime got from [`CustomOp::as_ort`].
    unsafe fn from_abi(op: *const AbiCustomOp) -> &'static CustomOp {
        // SAFETY: `abi` is the first field of a `repr(C)` struct that lives in a static table.
        unsafe { &*op.cast::<CustomOp>() }
    }
}

/// Every record this library registers in domain `ai.adanorm`, for a runtime with
/// (`shape_inference`) or without a usable `InferOutputShapeFn`.
///
/// onnxruntime up to 1.23 dereferences NULL inside its shape-inference wrapper when a node skips
/// an optional input with an empty name (`["X", "", "B"]`): the process dies while the model loads
/// (verified on 1.17.3, 1.20.1, 1.22.1, 1.23.2; fixed in 1.24.1). Those runtimes get records
/// without the function: no `Y` shape, and element types only from the records, which onnxruntime
/// cannot match for a node with a skipped input (an undeclared `Y` there fails to load, cleanly).
pub fn ops(shape_inference: bool) -> &'static [CustomOp] {
    if shape_inference {
        &OPS_WITH_SHAPES
    } else {
        &OPS_WITHOUT_SHAPES
    }
}

/// One record per op for each element type, all for provider `ep`.
const fn records<const N: usize>(ep: Ep, shape_inference: bool, elems: &[Elem]) -> [CustomOp; N] {
    assert!(N == OpKind::ALL.len() * elems.len());
    let mut out = [const { CustomOp::new(OpKind::AdaNorm, Elem::F32, Ep::Cpu, false) }; N];
    let mut i = 0;
    while i < N {
        let (kind, elem) = (OpKind::ALL[i / elems.len()], elems[i % elems.len()]);
        out[i] = CustomOp::new(kind, elem, ep, shape_inference);
        i += 1;
    }
    out
}

const CPU_TYPES: [Elem; 4] = [Elem::F32, Elem::F16, Elem::BF16, Elem::F64];
static OPS_WITH_SHAPES: [CustomOp; 8] = records(Ep::Cpu, true, &CPU_TYPES);
static OPS_WITHOUT_SHAPES: [CustomOp; 8] = records(Ep::Cpu, false, &CPU_TYPES);
// The GPU kernels cover the types the CUDA sources have; a `double` node on a CUDA session runs
// on the CPU records (onnxruntime copies its tensors across); so does a version-2 node with
// `Skip` or `Bias` (see `get_input_type`).
const CUDA_TYPES: [Elem; 3] = [Elem::F32, Elem::F16, Elem::BF16];
static CUDA_OPS_WITH_SHAPES: [CustomOp; 6] = records(Ep::Cuda, true, &CUDA_TYPES);
static CUDA_OPS_WITHOUT_SHAPES: [CustomOp; 6] = records(Ep::Cuda, false, &CUDA_TYPES);

/// The records for onnxruntime's CUDA execution provider (registered only where the library
/// can run them: see `cuda::registration`).
pub fn cuda_ops(shape_inference: bool) -> &'static [CustomOp] {
    if shape_inference {
        &CUDA_OPS_WITH_SHAPES
    } else {
        &CUDA_OPS_WITHOUT_SHAPES
    }
}

// The callbacks. The trivial ones cannot panic, but every one still goes through a guard so
// that no future edit can unwind into onnxruntime.

unsafe extern "system" fn get_name(op: *const AbiCustomOp) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: onnxruntime passes back the pointer we registered.
        unsafe { CustomOp::from_abi(op) }.kind.op_type_c().as_ptr()
    })
}

unsafe extern "system" fn get_execution_provider_type(op: *const AbiCustomOp) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: as in `get_name`.
        unsafe { CustomOp::from_abi(op) }.ep.name().as_ptr()
    })
}

unsafe extern "system" fn get_input_type(
    op: *const AbiCustomOp,
    index: usize,
) -> ONNXTensorElementDataType {
    let undefined = ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    guard_value(undefined, || {
        // SAFETY: as in `get_name`.
        let op = unsafe { CustomOp::from_abi(op) };
        match index {
            slot::X => op.elem.onnx(),
            // The CUDA kernels have no residual yet: a type no float tensor has keeps onnxruntime
            // from picking them for a node with Skip or Bias, so it runs that node on the CPU
            // records (copying its tensors), as for any op without a CUDA kernel.
            slot::SKIP | slot::BIAS if op.ep == Ep::Cuda => {
                ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING
            }
            // Any type: the kernel checks that the other inputs match X and names the rule.
            _ => undefined,
        }
    })
}

unsafe extern "system" fn get_input_type_count(_: *const AbiCustomOp) -> usize {
    INPUTS
}

unsafe extern "system" fn get_output_type(
    op: *const AbiCustomOp,
    index: usize,
) -> ONNXTensorElementDataType {
    guard_value(
        ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED,
        || {
            // SAFETY: as in `get_name`.
            let elem = unsafe { CustomOp::from_abi(op) }.elem;
            match index {
                slot::Y | slot::SUM => elem.onnx(),
                _ => elem.stats().onnx(),
            }
        },
    )
}

unsafe extern "system" fn get_output_type_count(_: *const AbiCustomOp) -> usize {
    OUTPUTS
}

unsafe extern "system" fn get_input_characteristic(
    _: *const AbiCustomOp,
    index: usize,
) -> OrtCustomOpInputOutputCharacteristic {
    characteristic(index)
}

unsafe extern "system" fn get_output_characteristic(
    _: *const AbiCustomOp,
    index: usize,
) -> OrtCustomOpInputOutputCharacteristic {
    characteristic(index)
}

/// Index 0 (`X`, `Y`) is required, the rest optional.
fn characteristic(index: usize) -> OrtCustomOpInputOutputCharacteristic {
    if index == 0 {
        OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED
    } else {
        OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
    }
}

unsafe extern "system" fn get_input_memory_type(_: *const AbiCustomOp, _: usize) -> OrtMemType {
    OrtMemType::OrtMemTypeDefault
}

unsafe extern "system" fn variadic_min_arity(_: *const AbiCustomOp) -> c_int {
    1
}

unsafe extern "system" fn variadic_homogeneity(_: *const AbiCustomOp) -> c_int {
    1
}

unsafe extern "system" fn first_version(_: *const AbiCustomOp) -> c_int {
    FIRST_OPSET_VERSION as c_int
}

unsafe extern "system" fn last_version(_: *const AbiCustomOp) -> c_int {
    OPSET_VERSION as c_int
}

unsafe extern "system" fn create_kernel_v2(
    op: *const AbiCustomOp,
    api: *const OrtApi,
    info: *const OrtKernelInfo,
    kernel: *mut *mut c_void,
) -> OrtStatusPtr {
    let api = Api::from_ptr(api);
    guard_status(api, || {
        let api = api.ok_or_else(|| Error::internal("onnxruntime passed no OrtApi"))?;
        // SAFETY: as in `get_name`.
        let op = unsafe { CustomOp::from_abi(op) };
        // SAFETY: `info` is valid for the duration of this call.
        let created = unsafe { Kernel::create(op, api, info) }?;
        // SAFETY: onnxruntime passes a valid out-pointer.
        unsafe { *kernel = Box::into_raw(Box::new(created)).cast() };
        Ok(())
    })
}

unsafe extern "system" fn kernel_compute_v2(
    kernel: *mut c_void,
    context: *mut OrtKernelContext,
) -> OrtStatusPtr {
    // SAFETY: `kernel` is what `create_kernel_v2` returned and stays alive until `kernel_destroy`;
    // onnxruntime may call compute concurrently, and `Kernel` is only read here.
    let Some(kernel) = (unsafe { kernel.cast::<Kernel>().as_ref() }) else {
        return OrtStatusPtr::default();
    };
    guard_status(Some(kernel.api()), || {
        // SAFETY: `context` is valid for the duration of this call.
        unsafe { kernel.compute(context) }
    })
}

unsafe extern "system" fn kernel_destroy(kernel: *mut c_void) {
    guard_value((), || {
        if !kernel.is_null() {
            // SAFETY: `kernel` came from `Box::into_raw` in `create_kernel_v2` and onnxruntime
            // destroys each kernel once.
            drop(unsafe { Box::from_raw(kernel.cast::<Kernel>()) });
        }
    })
}

unsafe extern "system" fn infer_output_shape(
    _: *const AbiCustomOp,
    context: *mut OrtShapeInferContext,
) -> OrtStatusPtr {
    let api = Api::registered();
    // onnxruntime discards this status (custom_ops.cc ignores the return value), so inference
    // never fails: it fills in what it can and the kernel reports bad inputs.
    let _ = guard_status(api, || {
        if let Some(api) = api {
            // SAFETY: `context` is valid for the duration of this call.
            unsafe { shape::infer(api, context) };
        }
        Ok(())
    });
    OrtStatusPtr::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record covers every version of the contract and declares its slots.
    #[test]
    fn the_registered_versions_and_slots_are_the_contracts() {
        let abi = &ops(true)[0].abi as *const AbiCustomOp;
        // SAFETY: a pointer to a static record, as onnxruntime would pass.
        unsafe {
            assert_eq!(first_version(abi) as i64, FIRST_OPSET_VERSION);
            assert_eq!(last_version(abi) as i64, OPSET_VERSION);
            assert_eq!(
                (get_input_type_count(abi), get_output_type_count(abi)),
                slot::counts(OPSET_VERSION)
            );
            assert_eq!(
                get_output_type(abi, slot::SUM),
                get_input_type(abi, slot::X),
                "Sum has X's type"
            );
        }
    }

    #[test]
    fn abi_layout_is_api_17() {
        // C API 17's OrtCustomOp: a u32 (padded to 8) and 21 pointers on 64-bit targets.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<AbiCustomOp>(), 8 + 21 * 8);
        // Without ort-sys' api-18 feature its struct must be the same size.
        if ort_sys::ORT_API_VERSION == 17 {
            assert_eq!(
                std::mem::size_of::<AbiCustomOp>(),
                std::mem::size_of::<ort_sys::OrtCustomOp>()
            );
        }
    }

    #[test]
    fn every_kind_and_type_is_registered_once() {
        for kind in OpKind::ALL {
            for elem in [Elem::F32, Elem::F16, Elem::BF16, Elem::F64] {
                let n = ops(true)
                    .iter()
                    .filter(|op| op.kind == kind && op.elem == elem && op.ep == Ep::Cpu)
                    .count();
                assert_eq!(n, 1, "{kind:?} {elem:?}");
            }
        }
    }

    #[test]
    fn cuda_records_cover_the_gpu_types_of_both_ops() {
        for shapes in [true, false] {
            let cuda = cuda_ops(shapes);
            assert_eq!(cuda.len(), 6);
            for kind in OpKind::ALL {
                for elem in [Elem::F32, Elem::F16, Elem::BF16] {
                    let n = cuda
                        .iter()
                        .filter(|op| op.kind == kind && op.elem == elem && op.ep == Ep::Cuda)
                        .count();
                    assert_eq!(n, 1, "{kind:?} {elem:?}");
                }
            }
            assert!(cuda.iter().all(|op| op.elem != Elem::F64));
            assert!(ops(shapes).iter().all(|op| op.ep == Ep::Cpu));
        }
        // SAFETY: a pointer to a static record, as onnxruntime would pass.
        let ep = unsafe { CStr::from_ptr(get_execution_provider_type(&cuda_ops(true)[0].abi)) };
        assert_eq!(ep, c"CUDAExecutionProvider");
        // Version 2's residual inputs never match the CUDA records (they fall to the CPU ones),
        // and stay open on the CPU records.
        let string = ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;
        let undefined = ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
        for (records, want) in [(cuda_ops(true), string), (ops(true), undefined)] {
            for op in records {
                for index in [slot::SKIP, slot::BIAS] {
                    // SAFETY: as above.
                    assert_eq!(unsafe { get_input_type(&op.abi, index) }, want);
                }
            }
        }
    }

    #[test]
    fn callbacks_report_types_and_characteristics() {
        let op = &ops(true)[1];
        let abi = &op.abi as *const AbiCustomOp;
        // SAFETY: a pointer to a static record, as onnxruntime would pass.
        unsafe {
            assert_eq!(CStr::from_ptr(get_name(abi)), c"AdaNorm");
            assert_eq!(
                CStr::from_ptr(get_execution_provider_type(abi)),
                c"CPUExecutionProvider"
            );
            assert_eq!(
                get_input_type(abi, 0),
                ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16
            );
            assert_eq!(
                get_input_type(abi, 2),
                ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
            );
            assert_eq!(
                get_output_type(abi, 0),
                ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16
            );
            assert_eq!(
                get_output_type(abi, 1),
                ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
            );
            assert_eq!(
                get_output_type(&ops(false)[3].abi, 2),
                ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE
            );
            assert_eq!(
                get_input_characteristic(abi, 0),
                OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED
            );
            assert_eq!(
                get_output_characteristic(abi, 1),
                OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
            );
            // A NULL kernel is ignored rather than dereferenced.
            kernel_destroy(std::ptr::null_mut());
            assert!(
                kernel_compute_v2(std::ptr::null_mut(), std::ptr::null_mut())
                    .0
                    .is_null()
            );
        }
    }
}
