//! ONNX element types by number (`TensorProto.DataType`), with the names users see.

pub const FLOAT: i32 = 1;
pub const UINT8: i32 = 2;
pub const INT8: i32 = 3;
pub const UINT16: i32 = 4;
pub const INT16: i32 = 5;
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;
pub const BOOL: i32 = 9;
pub const FLOAT16: i32 = 10;
pub const DOUBLE: i32 = 11;
pub const BFLOAT16: i32 = 16;

/// The lower-case name used in reports (`float32`, `float16`, ...).
pub fn name(elem_type: i32) -> String {
    match elem_type {
        FLOAT => "float32".into(),
        UINT8 => "uint8".into(),
        INT8 => "int8".into(),
        4 => "uint16".into(),
        5 => "int16".into(),
        INT32 => "int32".into(),
        INT64 => "int64".into(),
        8 => "string".into(),
        BOOL => "bool".into(),
        FLOAT16 => "float16".into(),
        DOUBLE => "float64".into(),
        12 => "uint32".into(),
        13 => "uint64".into(),
        BFLOAT16 => "bfloat16".into(),
        other => format!("dtype#{other}"),
    }
}

/// Floating types a LayerNorm can run in.
pub fn is_float(elem_type: i32) -> bool {
    matches!(elem_type, FLOAT | FLOAT16 | DOUBLE | BFLOAT16)
}

/// Bytes per element of fixed-size numeric types.
pub fn byte_size(elem_type: i32) -> Option<usize> {
    Some(match elem_type {
        UINT8 | INT8 | BOOL => 1,
        4 | 5 | FLOAT16 | BFLOAT16 => 2,
        FLOAT | INT32 | 12 => 4,
        INT64 | DOUBLE | 13 => 8,
        _ => return None,
    })
}
