//! Tensor element types: the spec's `T` and the ONNX type codes onnxruntime speaks.

use adanorm_kernels::Element;
use half::{bf16, f16};
use ort_sys::ONNXTensorElementDataType as Onnx;

/// One of the spec's `T`: `float`, `float16`, `bfloat16`, `double`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
    BF16,
    F64,
}

impl Elem {
    pub const fn onnx(self) -> Onnx {
        match self {
            Elem::F32 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
            Elem::F16 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
            Elem::BF16 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16,
            Elem::F64 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE,
        }
    }

    /// The type of `Mean` and `InvStdDev`: the compute precision (f64 for double, else float).
    pub const fn stats(self) -> Elem {
        match self {
            Elem::F64 => Elem::F64,
            _ => Elem::F32,
        }
    }

    pub fn code(self) -> i32 {
        self.onnx() as i32
    }
}

/// The ONNX name of a raw element-type code, for messages (`tensor(int32)` style names).
pub fn type_name(code: i32) -> String {
    let name = match code {
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        14 => "complex64",
        15 => "complex128",
        16 => "bfloat16",
        _ => return format!("element type {code}"),
    };
    name.to_owned()
}

/// A Rust element type with its ONNX code; what the CPU kernel is generic over.
pub trait OrtElement: Element {
    const ELEM: Elem;
}

impl OrtElement for f32 {
    const ELEM: Elem = Elem::F32;
}
impl OrtElement for f64 {
    const ELEM: Elem = Elem::F64;
}
impl OrtElement for f16 {
    const ELEM: Elem = Elem::F16;
}
impl OrtElement for bf16 {
    const ELEM: Elem = Elem::BF16;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_agree() {
        for elem in [Elem::F32, Elem::F16, Elem::BF16, Elem::F64] {
            assert!(["float", "float16", "bfloat16", "double"]
                .contains(&type_name(elem.code()).as_str()));
        }
        assert_eq!(type_name(Elem::BF16.code()), "bfloat16");
        assert_eq!(type_name(6), "int32");
        assert_eq!(type_name(26), "element type 26");
        assert_eq!(Elem::F16.stats(), Elem::F32);
        assert_eq!(Elem::F64.stats(), Elem::F64);
        // The stats type is the kernels' compute precision.
        assert_eq!(std::mem::size_of::<<half::f16 as Element>::Acc>(), 4);
        assert_eq!(std::mem::size_of::<<f64 as Element>::Acc>(), 8);
    }
}
