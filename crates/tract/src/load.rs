//! Loading and running whole models: what the CLI's `run` and `verify` call.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

use crate::node_checks::check_adanorm_nodes;

/// Reads an ONNX file into tract's protobuf types with every model-local function inlined
/// (attribute defaults included) and the `ai.adanorm` nodes checked.
///
/// tract never reads `ModelProto.functions`: a call would parse as an unimplemented op, or, for
/// a function named like a standard op (`local.Relu`), silently as tract's own op, since tract
/// ignores node domains. So calls are inlined first, on the full ONNX types (`adanorm-proto`;
/// tract's types lack the functions' attribute defaults). The `ai.adanorm` op bodies that
/// `rewrite --portable` adds stay calls and run as the native ops.
pub fn proto_for_path(path: &Path) -> TractResult<ModelProto> {
    let file = File::open(path).with_context(|| format!("Opening {}", path.display()))?;
    // Safety: as tract itself does, this assumes nobody truncates the file while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("Mapping {}", path.display()))?;
    // Tensor payloads stay slices of the map in the full types too.
    let bytes = bytes::Bytes::from_owner(map);
    let mut full = adanorm_proto::onnx::ModelProto::decode(bytes.clone())
        .with_context(|| format!("Decoding {} as an ONNX model", path.display()))?;
    let inlined = adanorm_proto::inline::inline_functions(&mut full, None)
        .map_err(|e| anyhow!("Inlining the functions of {}: {e}", path.display()))?;
    let mut proto = if inlined.is_empty() {
        ModelProto::decode(&bytes[..])
    } else {
        ModelProto::decode(&full.encode_to_vec()[..])
    }
    .with_context(|| format!("Decoding {} as an ONNX model", path.display()))?;
    // What is left are the `ai.adanorm` op bodies, which run as the native ops.
    proto.functions.clear();
    check_adanorm_nodes(&proto).with_context(|| format!("Checking {}", path.display()))?;
    forget_intermediate_shapes(&mut proto);
    Ok(proto)
}

/// Drops the shapes exporters annotate on intermediate values and outputs, keeping element types.
/// tract infers them itself, and the annotations can name symbols (the dynamo exporter's `s72`)
/// that tract cannot unify with the concrete input shapes `run_model` sets.
fn forget_intermediate_shapes(proto: &mut ModelProto) {
    if let Some(graph) = proto.graph.as_mut() {
        graph.value_info.clear();
        for output in &mut graph.output {
            if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) =
                output.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                t.shape = None;
            }
        }
    }
}

/// Inlines every call of a model-local function in tract's protobuf types (what
/// [`proto_for_path`] does for files). tract's types do not carry the functions' attribute
/// defaults, so a reference with no value at the call is dropped and the op's own default
/// applies; files keep their defaults through [`proto_for_path`].
pub fn inline_functions(proto: &mut ModelProto) -> TractResult<()> {
    let mut full = adanorm_proto::onnx::ModelProto::decode(&proto.encode_to_vec()[..])?;
    adanorm_proto::inline::inline_functions(&mut full, None).map_err(|e| anyhow!("{e}"))?;
    *proto = ModelProto::decode(&full.encode_to_vec()[..])?;
    Ok(())
}

/// Loads an ONNX file as a tract model with the `ai.adanorm` ops: reads the proto, inlines
/// model-local functions, and parses it with [`crate::onnx`]. External data is resolved
/// relative to the file, as tract's own `model_for_path` does.
pub fn model_for_path(path: &Path) -> TractResult<InferenceModel> {
    let proto = proto_for_path(path)?;
    let model_dir = path.parent().and_then(Path::to_str);
    let parsed = crate::onnx()
        .parse(&proto, model_dir)
        .with_context(|| format!("Parsing {}", path.display()))?;
    ensure!(
        parsed.unresolved_inputs.is_empty(),
        "{}: values used but never defined: {:?}",
        path.display(),
        parsed.unresolved_inputs
    );
    Ok(parsed.model)
}

/// The largest tensor a run may make (16 GiB): a model whose shapes, once the inputs are known,
/// ask for more is refused before anything is allocated, rather than aborting the process.
pub const MAX_TENSOR_BYTES: usize = 16 << 30;

/// Runs the model at `path` once on `inputs` (by graph input name) and returns every graph
/// output, by name, in its own element type.
///
/// Each input's type and shape are taken from its tensor, so symbolic dimensions resolve and
/// tract optimises for exactly these shapes. An input that is missing, unknown or given twice is
/// an error naming it, as is a value larger than [`MAX_TENSOR_BYTES`]. A panic inside tract (it
/// has some on malformed models) comes back as an error too.
pub fn run_model(path: &Path, inputs: Vec<(String, Tensor)>) -> TractResult<Vec<(String, Tensor)>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_model_unguarded(path, inputs)
    }))
    .unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        // The first line: a panic on an unwrapped error carries its whole backtrace.
        let first = msg.lines().next().unwrap_or_default();
        bail!("tract failed on this model (it panicked: {first})")
    })
}

/// Refuses a typed model with a value larger than [`MAX_TENSOR_BYTES`].
fn check_tensor_sizes(model: &TypedModel, path: &Path) -> TractResult<()> {
    for node in model.nodes() {
        for out in &node.outputs {
            let Some(shape) = out.fact.shape.as_concrete() else {
                continue;
            };
            let bytes = shape
                .iter()
                .try_fold(out.fact.datum_type.size_of(), |acc, &d| acc.checked_mul(d));
            ensure!(
                bytes.is_some_and(|b| b <= MAX_TENSOR_BYTES),
                "{}: node {:?} would make a tensor of shape {:?} ({}), more than the {} GiB a run may use",
                path.display(),
                node.name,
                shape,
                bytes.map_or("beyond the address space".into(), |b| format!("{b} bytes")),
                MAX_TENSOR_BYTES >> 30
            );
        }
    }
    Ok(())
}

fn run_model_unguarded(
    path: &Path,
    inputs: Vec<(String, Tensor)>,
) -> TractResult<Vec<(String, Tensor)>> {
    let mut model = model_for_path(path)?;
    let input_names: Vec<String> = model
        .input_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    let mut given: HashMap<String, Tensor> = HashMap::new();
    for (name, tensor) in inputs {
        ensure!(
            input_names.contains(&name),
            "{}: the model has no input {name:?}; its inputs are {input_names:?}",
            path.display()
        );
        ensure!(
            given.insert(name.clone(), tensor).is_none(),
            "input {name:?} is given twice"
        );
    }
    let mut values = tvec![];
    for (ix, name) in input_names.iter().enumerate() {
        let tensor = given.remove(name).with_context(|| {
            format!(
                "{}: no value given for the model input {name:?}",
                path.display()
            )
        })?;
        model.set_input_fact(ix, InferenceFact::dt_shape_from_tensor(&tensor))?;
        values.push(tensor.into_tvalue());
    }
    let output_names: Vec<String> = model
        .output_outlets()?
        .iter()
        .map(|&o| {
            model
                .outlet_label(o)
                .map(str::to_string)
                .unwrap_or_else(|| model.node(o.node).name.clone())
        })
        .collect();
    let typed = model
        .into_typed()
        .with_context(|| format!("Analysing {}", path.display()))?;
    check_tensor_sizes(&typed, path)?;
    let plan = typed
        .into_optimized()
        .with_context(|| format!("Optimising {}", path.display()))?
        .into_runnable()?;
    let outputs = plan.run(values)?;
    Ok(output_names
        .into_iter()
        .zip(outputs)
        .map(|(name, value)| (name, value.into_tensor()))
        .collect())
}
