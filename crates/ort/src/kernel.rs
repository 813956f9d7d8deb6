//! One kernel per node: its attributes checked once when the session is created, then a compute
//! call per run, handed to the execution provider's implementation.

use adanorm_kernels::params::{attr, slot, DOMAIN};
use adanorm_kernels::{row_layout, Params, Variant};
use ort_sys::{OrtKernelContext, OrtKernelInfo};

use crate::api::Api;
use crate::attrs::{node_label, type_mismatch, NodeInfo};
use crate::hooks::Hooks;
use crate::op::{CustomOp, Ep, OpKind};
use crate::status::{catch, Error};
use crate::{cpu, cuda};

/// A node's validated configuration.
pub struct Kernel {
    api: Api,
    pub op: &'static CustomOp,
    /// `AdaNorm node 'ln0'`: the prefix of every message about this node.
    pub label: String,
    /// `axis` as given (negative counts from the end); checked against each input's rank.
    pub axis: i64,
    pub params: Params,
    pub hooks: Hooks,
}

impl Kernel {
    /// Reads and checks the node's attributes and declared input types. Errors surface while the
    /// session is created ("Exception during initialization: ..."), naming the node and the rule.
    ///
    /// # Safety
    /// `info` must be live for the duration of the call.
    pub unsafe fn create(
        op: &'static CustomOp,
        api: Api,
        info: *const OrtKernelInfo,
    ) -> Result<Kernel, Error> {
        // SAFETY: per the contract.
        let node = unsafe { NodeInfo::new(api, info) };
        let name = node.node_name().unwrap_or_default();
        let label = node_label(op.kind.op_type(), &name, node.output_name(0).as_deref());
        let checked = || -> Result<Kernel, Error> {
            let hooks = Hooks::from_node(&node);
            hooks.at_create();
            let axis = node.int(attr::AXIS, attr::DEFAULT_AXIS)?;
            let epsilon = node.float(attr::EPSILON, attr::DEFAULT_EPSILON)?;
            let unbiased = node.int(attr::UNBIASED, attr::DEFAULT_UNBIASED)?;
            let eps_in_sqrt = node.int(attr::EPS_IN_SQRT, attr::DEFAULT_EPS_IN_SQRT)?;
            let variant = match op.kind {
                OpKind::AdaNorm => Variant::AdaNorm {
                    c: node.float(attr::C, attr::DEFAULT_C)? as f64,
                    k: node.float(attr::K, attr::DEFAULT_K)? as f64,
                },
                OpKind::LayerNormSimple => Variant::LayerNormSimple,
            };
            let params = Params::from_attributes(variant, epsilon as f64, unbiased, eps_in_sqrt)?;
            check_residual_support(op, &node)?;
            check_declared_inputs(op, &node, axis)?;
            Ok(Kernel {
                api,
                op,
                label: label.clone(),
                axis,
                params,
                hooks,
            })
        };
        // A panic is caught here too, so even that message names the node.
        catch(checked).map_err(|e| e.context(&label))
    }

    pub fn api(&self) -> Api {
        self.api
    }

    /// Runs the node once.
    ///
    /// # Safety
    /// `ctx` must be the live context of this compute call.
    pub unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), Error> {
        let result = catch(|| {
            self.hooks.at_compute();
            match self.op.ep {
                // SAFETY: per the contract.
                Ep::Cpu => unsafe { cpu::compute(self, ctx) },
                // SAFETY: per the contract.
                Ep::Cuda => unsafe { cuda::compute(self, ctx) },
            }
        });
        result.map_err(|e| e.context(&self.label))
    }
}

/// The CUDA kernels do not implement version 2's residual slots yet. onnxruntime does not pick
/// the CUDA records for a node with `Skip` or `Bias` (`op::get_input_type`); this refuses, when
/// the session is created, whatever still reaches them (a `Sum` alone), never runs it without.
fn check_residual_support(op: &CustomOp, node: &NodeInfo) -> Result<(), Error> {
    if op.ep != Ep::Cuda {
        return Ok(());
    }
    let named = |name: Option<String>| name.is_some_and(|n| !n.is_empty());
    let used: Vec<&str> = [
        ("Skip", named(node.input_name(slot::SKIP))),
        ("Bias", named(node.input_name(slot::BIAS))),
        ("Sum", named(node.output_name(slot::SUM))),
    ]
    .into_iter()
    .filter_map(|(what, used)| used.then_some(what))
    .collect();
    if used.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "the node uses {} ({DOMAIN} version 2), which this library's CUDA kernels do not \
         implement yet; run it on the CPUExecutionProvider, or rewrite the model with \
         --no-residual",
        used.join(", ")
    )))
}

/// What the graph already tells: the other inputs' element types against `X`'s, and `axis` against `X`'s
/// rank when it is declared. The compute call checks the actual tensors again.
fn check_declared_inputs(op: &CustomOp, node: &NodeInfo, axis: i64) -> Result<(), Error> {
    let x = op.elem.code();
    for (index, what) in [
        (slot::SCALE, "Scale"),
        (slot::B, "B"),
        (slot::SKIP, "Skip"),
        (slot::BIAS, "Bias"),
    ] {
        if index >= node.input_count()? {
            break;
        }
        if let Some(ts) = node.input_type_shape(index) {
            if ts.elem != x {
                return Err(Error::invalid(type_mismatch(what, ts.elem, x)));
            }
        }
    }
    // A declared rank of 0 may also mean "rank unknown"; leave that to compute.
    if let Some(ts) = node.input_type_shape(0) {
        if !ts.dims.is_empty() {
            let known: Vec<usize> = ts.dims.iter().map(|&d| d.max(0) as usize).collect();
            if let Err(e) = row_layout(&known, axis) {
                if e.rule == adanorm_kernels::params::rule::AXIS {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}
