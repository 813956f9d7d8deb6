//! Planning `fuse` and `rewrite`: for each match, the `ai.adanorm` node that replaces it, what
//! happens to its gain and bias, and a report line saying whether the model still computes the
//! same function there. Matches that cannot be rewritten are left as they were, with the reason.

use std::collections::{HashMap, HashSet};

use super::apply::{self, Patch, Replacement};
use super::fold;
use super::names::Names;
use super::node::{self, OpKind, OpParams};
use super::weights::{WeightTensor, WeightsFile};
use super::{embed, portable, residual, Affine, Change, Options, Outcome, Target};
use crate::error::{Error, Result};
use crate::graph::{GraphIndex, NodeId};
use crate::onnx::attr;
use crate::onnx::proto::{NodeProto, TensorProto};
use crate::patterns::{Family, Match};

/// `fuse`/`rewrite` of a whole model: every graph's matches (see [`plan_scopes`]).
pub fn plan_model(g: &GraphIndex<'_>, opts: &Options) -> Result<Outcome> {
    let subgraphs = g.subgraphs()?;
    let found = crate::patterns::find_matches_everywhere(g, &subgraphs);
    let scopes: Vec<(&GraphIndex<'_>, &[Match])> = found
        .iter()
        .map(|(scope, ms)| (*scope, ms.as_slice()))
        .collect();
    plan_scopes(&scopes, opts)
}

/// Plans the main graph's matches only (see [`plan_model`] for the whole model).
pub fn plan(g: &GraphIndex<'_>, matches: &[Match], opts: &Options) -> Result<Outcome> {
    plan_scopes(&[(g, matches)], opts)
}

/// What planning collects across every graph of the model.
#[derive(Default)]
struct Collected {
    changes: Vec<Change>,
    skipped: Vec<(String, String)>,
    weights: WeightsFile,
    /// Every name in use anywhere in the model: what the plan adds gets a fresh one.
    names: Names,
    /// Element types of values the plan creates (not in any index), for `--portable`.
    new_types: HashMap<String, i32>,
    /// The element type each new `ai.adanorm` node computes in, by node name (unique in the
    /// model), for `--portable`.
    call_types: HashMap<String, i32>,
}

/// Plans every graph's matches: the main graph's and those of its subgraphs (If branches,
/// Loop/Scan bodies; `GraphIndex::subgraphs`). Subgraphs are patched before the graphs that hold
/// them; the first entry must be the main graph.
pub fn plan_scopes(scopes: &[(&GraphIndex<'_>, &[Match])], opts: &Options) -> Result<Outcome> {
    let main = scopes.first().expect("the main graph comes first").0;
    debug_assert!(main.scope.is_main());
    let mut all = Collected {
        names: Names::of_model(&main.model.proto),
        ..Default::default()
    };
    let mut patches = Vec::new();
    for &(g, matches) in scopes {
        patches.push((g, plan_scope(g, matches, opts, &mut all)));
    }
    let mut model = main.model.proto.clone();
    patches.sort_by_key(|(g, _)| std::cmp::Reverse(g.scope.0.len()));
    for (g, patch) in patches {
        apply::apply_to(&mut model, g, patch);
    }
    if opts.portable {
        let types = |v: &str| {
            scopes
                .iter()
                .find_map(|(g, _)| g.elem_type(v))
                .or_else(|| all.new_types.get(v).copied())
        };
        let call_type = |n: &str| all.call_types.get(n).copied();
        portable::add_portable_functions(&mut model, &types, &call_type)?;
    }
    // After --portable, which writes version 2's slots as Adds in front of version-1 calls.
    apply::sync_adanorm_opset(&mut model);
    Ok(Outcome {
        model,
        changes: all.changes,
        skipped: all.skipped,
        weights: (!all.weights.is_empty()).then_some(all.weights),
    })
}

/// The patch for one graph's matches.
fn plan_scope(g: &GraphIndex<'_>, matches: &[Match], opts: &Options, all: &mut Collected) -> Patch {
    let mut patch = Patch::default();
    let Collected {
        changes,
        skipped,
        weights,
        names,
        new_types,
        call_types,
    } = all;
    let mut removed_nodes: HashSet<usize> = HashSet::new();
    // (replacement, the nodes its match released): see `remove_released`.
    let mut released: Vec<(usize, &Vec<NodeId>)> = Vec::new();
    // Nodes some match holds, rewritten or not: never absorbed as another norm's residual.
    let in_matches: HashSet<usize> = matches
        .iter()
        .flat_map(|m| m.nodes.iter().copied())
        .collect();

    for m in matches {
        let what = describe(g, m);
        if m.family == Family::RmsNorm {
            skipped.push((what, "RMSNorm has no centring: reported, left alone".into()));
            continue;
        }
        if m.is_one_node_op() && !opts.include_fused {
            continue; // fuse leaves fused ops as they are
        }
        if !opts.only.is_empty() && !opts.only.contains(&m.family) {
            skipped.push((
                what,
                format!("{} is not selected by --only", m.family.name()),
            ));
            continue;
        }
        if !m.rewritable {
            skipped.push((what, m.reason.clone().unwrap_or_default()));
            continue;
        }
        // Decide overlaps before anything is staged (weights, folded copies) for this match.
        if m.nodes.iter().any(|id| removed_nodes.contains(id)) {
            skipped.push((what, "it overlaps another match".into()));
            continue;
        }
        // Channels-first: the op normalises the last axis of a transposed view.
        let channels_first_rank = match (m.channels_first, g.rank(&m.input)) {
            (true, Some(rank)) => Some(rank),
            (true, None) => {
                skipped.push((
                    what,
                    "it is channels-first and the rank of its input is unknown".into(),
                ));
                continue;
            }
            (false, _) => None,
        };
        let axis = match (m.axis, channels_first_rank) {
            (_, Some(_)) => -1,
            (Some(axis), None) => axis,
            (None, None) => {
                skipped.push((
                    what,
                    "its axes cannot be expressed as one trailing axis".into(),
                ));
                continue;
            }
        };
        let single = g.node(m.nodes[0]);
        let skip_ln = m.is_one_node_op() && single.op_type() == "SkipLayerNormalization";
        // Checked before anything is staged for this match (weights, folded copies).
        if skip_ln && (0..2).any(|i| single.input.get(i).is_none_or(|s| s.is_empty())) {
            skipped.push((what, "it lacks its input or its skip input".into()));
            continue;
        }
        // EmbedLayerNormalization: the norm's input is the embedding sum the split computes.
        let embed_ln = m.is_one_node_op() && single.op_type() == "EmbedLayerNormalization";
        if embed_ln {
            if let Err(why) = embed::can_split(g, single) {
                skipped.push((what, why));
                continue;
            }
        }
        // The type the norm reads: its input's (an EmbedLayerNormalization's sum has its word
        // table's), as the matcher recorded it.
        let in_type = m.dtype;
        let has_stat_outputs = m.mean_output.is_some() || m.inv_std_output.is_some();
        let param_types = |ps: [&Option<String>; 2]| -> Vec<i32> {
            ps.into_iter()
                .flatten()
                .filter_map(|p| g.elem_type(p))
                .collect()
        };
        if has_stat_outputs && common_type(in_type, &param_types([&m.scale, &m.bias])).is_some() {
            skipped.push((
                what,
                "its parameters' type differs from its input's and it has Mean/InvStdDev outputs"
                    .into(),
            ));
            continue;
        }

        let adanorm = m.family == Family::AdaNorm;
        let (kind, c, k) = match opts.target {
            Target::Same if adanorm => (OpKind::AdaNorm, m.c, m.k),
            Target::Same => (OpKind::LayerNormSimple, 1.0, 0.0),
            Target::AdaNorm => (
                OpKind::AdaNorm,
                opts.c.unwrap_or(if adanorm { m.c } else { 1.0 }),
                opts.k.unwrap_or(if adanorm { m.k } else { 0.1 }),
            ),
            Target::Simple => (OpKind::LayerNormSimple, 1.0, 0.0),
        };
        let params = OpParams {
            kind,
            axis,
            epsilon: m.epsilon,
            unbiased: m.unbiased,
            eps_in_sqrt: m.eps_in_sqrt,
            c,
            k,
        };
        let node_names: Vec<&str> = m.nodes.iter().map(|&id| g.node(id).name()).collect();
        let name = node::derive_name(&node_names, &m.output, kind, &|n| names.is_taken(n));
        names.reserve(&name);

        // Gain and bias.
        let mut scale = m.scale.clone();
        let mut bias = m.bias.clone();
        let mut note = None;
        let mut remove = m.nodes.clone();
        let mut drop_inits = Vec::new();
        let mut affine_same = true;
        match opts.affine {
            Affine::Keep => {}
            Affine::Drop => match drop_params(g, m, &name, weights) {
                Ok((dropped, extra_nodes)) => {
                    affine_same = dropped.is_empty();
                    drop_inits = dropped;
                    remove.extend(extra_nodes);
                    scale = None;
                    bias = None;
                }
                Err(why) => note = Some(format!("affine kept: {why}")),
            },
            // Its gain runs along axis 1, never the axis a MatMul contracts.
            Affine::Fold if channels_first_rank.is_some() => {
                note = Some("affine kept: a channels-first gain cannot fold into a MatMul".into());
            }
            // A subgraph's MatMul weights usually live in the enclosing graph, shared with the
            // other branch (merged decoders): folding into them would change that branch too.
            Affine::Fold if !g.scope.is_main() => {
                note = Some("affine kept: not folded inside a subgraph".into());
            }
            Affine::Fold => match fold::plan(g, m, &name, names) {
                // A consumer another norm absorbed as its residual: its inputs are gone.
                Ok(f)
                    if f.repoint
                        .iter()
                        .any(|(id, _, _)| removed_nodes.contains(id)) =>
                {
                    note = Some(
                        "affine kept: a layer it would fold into was absorbed by another norm"
                            .into(),
                    );
                }
                Ok(f) => {
                    scale = None;
                    bias = None;
                    for (key, original, t) in f.originals {
                        weights.insert(key, &original, t);
                    }
                    patch.add_initializers.extend(f.new_initializers);
                    patch.repoint.extend(f.repoint);
                    patch
                        .maybe_unused
                        .extend(f.mapping.iter().map(|m| m.original.clone()));
                    if !f.mapping.is_empty() {
                        let json = serde_json::to_string(&f.mapping).expect("plain data");
                        patch
                            .metadata
                            .push((format!("{}{name}", fold::FOLD_PREFIX), json));
                    }
                    if f.folded_any {
                        note = Some(format!("gain/bias folded into {}", f.consumers.join(", ")));
                    }
                }
                Err(why) => note = Some(format!("affine kept: {why}")),
            },
        }

        let mut insert: Vec<NodeProto> = Vec::new();
        // ops-spec Scale/B broadcast onto X.shape[axis:] alone: drop leading 1-dims beyond it
        // ([C, 1, 1] of a channels-first gain becomes [C]).
        for p in [&mut scale, &mut bias].into_iter().flatten() {
            let fitted = match channels_first_rank {
                Some(_) => Some(channel_param(g, p, &name, names, &mut patch, &mut insert)),
                None => fit_param(g, p, axis, &name, names, &mut patch, &mut insert),
            };
            if let Some(fitted) = fitted {
                *p = fitted;
            }
        }
        // One element type for X, Scale and B (ops-spec): where the parameters are wider than
        // the input (a float16 model whose gain lives in a float32 island), the node computes
        // in the wider type between Casts, as the island did; narrower parameters are widened
        // (exactly).
        let out_type = g.elem_type(&m.output).or(in_type);
        let compute = common_type(in_type, &param_types([&m.scale, &m.bias]))
            .filter(|_| scale.is_some() || bias.is_some());
        // Version 2's residual slots: where the node reads its input as it is (no Casts, no
        // Transposes) and the model is not --portable (its runtimes gain nothing, and the
        // standard-op split of the slots could not revert to the recorded Adds).
        let residual_ok = opts.residual
            && !opts.portable
            && compute.is_none()
            && channels_first_rank.is_none()
            && !embed_ln;
        let mut slots = residual::Slots::default();
        let mut x = m.input.clone();
        if skip_ln {
            match residual::from_skip_layer_norm(single, &name, &mut insert, names) {
                Ok((input, s)) if residual_ok => {
                    x = input;
                    slots = s;
                }
                // Version 1: its slots as the Adds they stand for.
                Ok((input, s)) => {
                    let (adds, sum) = residual::as_adds(&input, &s, &name, names);
                    insert.extend(adds);
                    x = sum;
                }
                Err(why) => {
                    skipped.push((what, why));
                    continue;
                }
            }
        }
        if embed_ln {
            match embed::split(g, single, &name, &mut insert, names) {
                Ok(sum) => x = sum,
                Err(why) => {
                    skipped.push((what, why));
                    continue;
                }
            }
        }
        let mut final_out = m.output.clone();
        if let Some(t) = compute {
            if in_type != Some(t) {
                let cast_in = names.fresh(&format!("{name}/ToComputeType"));
                let widened = names.fresh(&format!("{name}/input_widened"));
                insert.push(cast(&cast_in, &x, &widened, t));
                new_types.insert(widened.clone(), t);
                x = widened;
            }
            if out_type != Some(t) {
                final_out = names.fresh(&format!("{name}/computed"));
                new_types.insert(final_out.clone(), t);
            }
            let originals = [&m.scale, &m.bias];
            for (p, original) in [&mut scale, &mut bias].into_iter().zip(originals) {
                let Some(p) = p else { continue };
                if original.as_ref().and_then(|o| g.elem_type(o)) != Some(t) {
                    let cast_name = names.fresh(&format!("{p}:{name}/Widen"));
                    let widened = names.fresh(&format!("{p}:{name}/widened"));
                    insert.push(cast(&cast_name, p, &widened, t));
                    new_types.insert(widened.clone(), t);
                    *p = widened;
                }
            }
            note.get_or_insert_with(|| {
                format!(
                    "computes in {} between Casts: its input and parameters differ in type",
                    crate::onnx::dtype::name(t)
                )
            });
        }
        let mut y = final_out.clone();
        if let Some(rank) = channels_first_rank {
            let (to_last, _) = channels_last_perms(rank);
            let (x_last, y_last) = (
                names.fresh(&format!("{name}/channels_last")),
                names.fresh(&format!("{name}/channels_last_out")),
            );
            let into = names.fresh(&format!("{name}/ToChannelsLast"));
            insert.push(transpose(&into, &x, &x_last, &to_last));
            x = x_last;
            y = y_last;
        }
        // The residual Add in front.
        if residual_ok && !skip_ln {
            // Nodes a fold repoints keep their inputs' new values only if they stay.
            let repointed = patch.repoint.iter().map(|(id, _, _)| *id);
            let claimed: HashSet<usize> = in_matches
                .union(&removed_nodes)
                .copied()
                .chain(repointed)
                .collect();
            let insert_at = remove.iter().copied().max().expect("a match has nodes");
            if let Some(a) = residual::absorb(g, m, axis, &claimed, insert_at) {
                x = a.x.clone();
                remove.extend(a.nodes.iter().chain(&a.copies).copied());
                let line = a.describe(g);
                note = Some(match note {
                    Some(n) => format!("{n}; {line}"),
                    None => line,
                });
                slots = residual::Slots {
                    skip: Some(a.skip),
                    bias: a.bias,
                    sum: a.sum.then(|| m.input.clone()),
                };
            }
        }
        // Values this plan creates, typed for `--portable` (they are not in the original graph).
        if let Some(t) = compute.or(in_type) {
            new_types.entry(x.clone()).or_insert(t);
            call_types.insert(name.clone(), t);
        }
        let doc = format!("adanorm-onnx: replaces {}", what);
        insert.push(node::build(
            &name,
            &params,
            &[
                Some(&x),
                scale.as_deref(),
                bias.as_deref(),
                slots.skip.as_deref(),
                slots.bias.as_deref(),
            ],
            &[
                Some(&y),
                m.mean_output.as_deref(),
                m.inv_std_output.as_deref(),
                slots.sum.as_deref(),
            ],
            &doc,
        ));
        if let Some(rank) = channels_first_rank {
            let (_, to_first) = channels_last_perms(rank);
            let back = names.fresh(&format!("{name}/ToChannelsFirst"));
            insert.push(transpose(&back, &y, &final_out, &to_first));
        }
        if final_out != m.output {
            let back = names.fresh(&format!("{name}/ToOutputType"));
            let t = out_type.expect("a cast back is planned only to a known type");
            insert.push(cast(&back, &final_out, &m.output, t));
        }
        if remove.iter().any(|id| removed_nodes.contains(id)) {
            skipped.push((what, "it overlaps another match".into()));
            continue;
        }
        removed_nodes.extend(remove.iter().copied());

        let before_ck = if adanorm { (m.c, m.k) } else { (1.0, 0.0) };
        let same_function = params.effective_ck() == before_ck && affine_same;
        let around = if channels_first_rank.is_some() {
            " between Transposes (channels-first)"
        } else {
            ""
        };
        changes.push(Change {
            before: what,
            after: format!(
                "{} '{}'{}{around}",
                kind.op_type(),
                name,
                describe_params(&params)
            ),
            same_function,
            note,
        });
        let mut outputs = vec![m.output.clone()];
        outputs.extend(m.mean_output.iter().cloned());
        outputs.extend(m.inv_std_output.iter().cloned());
        outputs.extend(slots.sum.iter().cloned());
        if embed_ln {
            outputs.extend(embed::extra_outputs(single));
        }
        let inserted_names = insert.iter().map(|n| n.name().to_string()).collect();
        // Y (when the node writes the match's output itself) and Sum keep the values' names,
        // so what is known of those values describes them.
        let declared_outputs = [
            (y == m.output).then_some(m.output.as_str()),
            slots.sum.as_deref(),
        ];
        // Inside a subgraph, sizes are written as numbers only: tract binds a `dim_param` of
        // a subgraph apart from the main graph's, so a declared name there would not unify
        // with the size the run gives it.
        let value_info = declared_outputs
            .into_iter()
            .flatten()
            .filter_map(|v| {
                let mut facts = g.facts(v)?.clone();
                if !g.scope.is_main() {
                    for d in facts.shape.iter_mut().flatten() {
                        if d.known().is_none() {
                            *d = crate::graph::shapes::Dim::Unknown;
                        }
                    }
                }
                crate::graph::shapes::to_value_info(v, &facts)
            })
            .collect();
        if !m.released.is_empty() {
            released.push((patch.replacements.len(), &m.released));
        }
        patch.replacements.push(Replacement {
            remove,
            insert,
            outputs,
            record_key: Some(name),
            inserted_names,
            drop_initializers: drop_inits,
            value_info,
        });
    }
    remove_released(g, &released, &mut patch, &mut removed_nodes);
    patch
}

/// Nodes the rewritten matches read through but did not own (a centring two norms share) go
/// once only removed nodes read them, each with the first replacement that released it: its
/// record puts it back in front of every norm that read it.
fn remove_released(
    g: &GraphIndex<'_>,
    released: &[(usize, &Vec<NodeId>)],
    patch: &mut Patch,
    removed_nodes: &mut HashSet<NodeId>,
) {
    loop {
        let mut changed = false;
        for &(replacement, nodes) in released {
            for &id in nodes {
                let unread = g.node(id).output.iter().filter(|o| !o.is_empty()).all(|o| {
                    !g.is_graph_output(o)
                        && g.consumers(o).iter().all(|r| removed_nodes.contains(r))
                });
                if unread && removed_nodes.insert(id) {
                    patch.replacements[replacement].remove.push(id);
                    changed = true;
                }
            }
        }
        if !changed {
            return;
        }
    }
}

/// A parameter of shape `[1, .., 1, d...]` with more dimensions than the normalised ones
/// (Keras writes its gain as `[1, 1, H]`) as a tensor of exactly the normalised rank: a renamed
/// view of the same initializer bytes, or a `Reshape` of a computed value.
fn fit_param(
    g: &GraphIndex<'_>,
    p: &str,
    axis: i64,
    node_name: &str,
    names: &mut Names,
    patch: &mut Patch,
    insert: &mut Vec<NodeProto>,
) -> Option<String> {
    let rows_rank = usize::try_from(-axis).ok()?;
    let shape = g.shape(p)?;
    if shape.len() <= rows_rank {
        return None;
    }
    let (lead, rest) = shape.split_at(shape.len() - rows_rank);
    if !lead.iter().all(|d| d.known() == Some(1)) {
        return None;
    }
    let dims: Vec<i64> = rest.iter().map(|d| d.known()).collect::<Option<_>>()?;
    Some(reshaped_param(
        g,
        p,
        node_name,
        names,
        Some(dims.clone()),
        &dims,
        patch,
        insert,
    ))
}

/// `p` under a new name with another shape: a renamed view of the initializer's bytes with
/// dims `view` when `p` is an initializer and `view` is known, else a `Reshape` of `p` to
/// `target` (which may hold -1).
// The plan's shared state (names, patch, inserted nodes) travels as separate borrows; issue 15
// gathers it into one planning context.
#[allow(clippy::too_many_arguments)]
fn reshaped_param(
    g: &GraphIndex<'_>,
    p: &str,
    node_name: &str,
    names: &mut Names,
    view: Option<Vec<i64>>,
    target: &[i64],
    patch: &mut Patch,
    insert: &mut Vec<NodeProto>,
) -> String {
    // A new tensor under a new name: `p` itself may be read elsewhere with its own shape.
    let fitted = names.fresh(&format!("{p}:{node_name}"));
    match (g.initializer(p).filter(|_| !g.is_overridable(p)), view) {
        (Some(t), Some(dims)) => {
            let mut t = t.clone(); // payload bytes are shared, not copied
            t.name = Some(fitted.clone());
            t.dims = dims;
            patch.add_initializers.push(t);
        }
        _ => {
            let shape_name = names.fresh(&format!("{fitted}/shape"));
            let values: Vec<u8> = target.iter().flat_map(|d| d.to_le_bytes()).collect();
            patch.add_initializers.push(TensorProto {
                name: Some(shape_name.clone()),
                dims: vec![target.len() as i64],
                data_type: Some(7),
                raw_data: Some(values.into()),
                ..Default::default()
            });
            insert.push(NodeProto {
                name: Some(names.fresh(&format!("{fitted}/Reshape"))),
                op_type: Some("Reshape".into()),
                input: vec![p.to_string(), shape_name],
                output: vec![fitted.clone()],
                ..Default::default()
            });
        }
    }
    fitted
}

/// The permutations that move axis 1 of a rank-`rank` tensor last (`[0, 2, .., r-1, 1]`) and
/// back (`[0, r-1, 1, .., r-2]`).
fn channels_last_perms(rank: usize) -> (Vec<i64>, Vec<i64>) {
    let r = rank as i64;
    let to_last = std::iter::once(0)
        .chain(2..r)
        .chain(std::iter::once(1))
        .collect();
    let to_first = [0, r - 1].into_iter().chain(1..r - 1).collect();
    (to_last, to_first)
}

/// The widest floating type among the input's and the parameters' when they differ (`None`
/// when they agree or a type is unknown): float16 and bfloat16 meet in float.
fn common_type(x: Option<i32>, params: &[i32]) -> Option<i32> {
    use crate::onnx::dtype::{BFLOAT16, DOUBLE, FLOAT, FLOAT16};
    let x = x?;
    if params.iter().all(|&p| p == x) {
        return None;
    }
    let rank = |t: i32| match t {
        FLOAT16 | BFLOAT16 => Some(1),
        FLOAT => Some(2),
        DOUBLE => Some(3),
        _ => None,
    };
    let top = std::iter::once(x)
        .chain(params.iter().copied())
        .map(rank)
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()?;
    Some(match top {
        1 => FLOAT, // float16 with bfloat16: neither holds the other
        2 => FLOAT,
        _ => DOUBLE,
    })
}

fn cast(name: &str, input: &str, output: &str, to: i32) -> NodeProto {
    NodeProto {
        name: Some(name.to_string()),
        op_type: Some("Cast".into()),
        input: vec![input.to_string()],
        output: vec![output.to_string()],
        attribute: vec![node::int_attr("to", to as i64)],
        ..Default::default()
    }
}

fn transpose(name: &str, input: &str, output: &str, perm: &[i64]) -> NodeProto {
    NodeProto {
        name: Some(name.to_string()),
        op_type: Some("Transpose".into()),
        input: vec![input.to_string()],
        output: vec![output.to_string()],
        attribute: vec![node::ints_attr("perm", perm)],
        ..Default::default()
    }
}

/// A channels-first gain or bias (`[C, 1, 1]`, `[1, C, 1, 1]`, or one value: the matcher's
/// per-row rule leaves only axis 1 unequal to 1) as a vector the transposed op broadcasts over its
/// last axis: a renamed `[C]` view of the initializer's bytes, or a `Reshape` to `[-1]` of a
/// computed value.
fn channel_param(
    g: &GraphIndex<'_>,
    p: &str,
    node_name: &str,
    names: &mut Names,
    patch: &mut Patch,
    insert: &mut Vec<NodeProto>,
) -> String {
    let count = g
        .shape(p)
        .and_then(|s| crate::graph::shapes::checked_product(s.iter().map(|d| d.known())));
    reshaped_param(
        g,
        p,
        node_name,
        names,
        count.map(|c| vec![c]),
        &[-1],
        patch,
        insert,
    )
}

/// Takes the constant gain and bias out of the model into the weights file; returns the
/// initializers to drop and `Constant` nodes that only fed them.
fn drop_params(
    g: &GraphIndex<'_>,
    m: &Match,
    node_name: &str,
    out: &mut WeightsFile,
) -> std::result::Result<(Vec<String>, Vec<usize>), String> {
    let mut staged = Vec::new();
    let mut inits = Vec::new();
    let mut nodes = Vec::new();
    for (role, p) in [("scale", &m.scale), ("bias", &m.bias)] {
        let Some(p) = p else { continue };
        let t: TensorProto = if let Some(t) = g.initializer(p).filter(|_| !g.is_overridable(p)) {
            inits.push(p.clone());
            t.clone()
        } else if let Some((id, n)) = g
            .producer_node(p)
            .filter(|(_, n)| n.op_type() == "Constant")
        {
            let t = attr::tensor(n, "value")
                .ok_or_else(|| format!("{role} '{p}' is not a tensor constant"))?;
            if !g.is_graph_output(p) && g.consumers(p).iter().all(|c| m.nodes.contains(c)) {
                nodes.push(id);
            }
            t.clone()
        } else if g.initializer(p).is_some() {
            return Err(format!(
                "its {role} '{p}' is an initializer that is also a graph input (IR version >= 4): a feed may override it, so it is not a constant"
            ));
        } else {
            return Err(format!("its {role} '{p}' is not a constant"));
        };
        let w = WeightTensor::from_proto(g.model, &t).map_err(|e| e.to_string())?;
        staged.push((format!("{node_name}/{role}"), p.clone(), w));
    }
    for (key, original, w) in staged {
        out.insert(key, &original, w);
    }
    Ok((inits, nodes))
}

/// "decomposed layernorm (11 nodes: a .. b) -> out" for the report.
pub fn describe(g: &GraphIndex<'_>, m: &Match) -> String {
    let first = g.label(m.nodes[0]);
    let nodes = if m.nodes.len() == 1 {
        format!("'{first}'")
    } else {
        format!(
            "{} nodes '{}' .. '{}'",
            m.nodes.len(),
            first,
            g.label(*m.nodes.last().expect("non-empty"))
        )
    };
    let inside = if g.scope.is_main() {
        String::new()
    } else {
        format!(" in {}", g.scope.label())
    };
    format!(
        "{} [{}] {} -> '{}'{inside}",
        m.family.name(),
        m.form_name(),
        nodes,
        m.output
    )
}

fn describe_params(p: &OpParams) -> String {
    let mut s = format!(
        " (axis {}, epsilon {:e}, unbiased {}, eps_in_sqrt {}",
        p.axis, p.epsilon, p.unbiased as u8, p.eps_in_sqrt as u8
    );
    if p.kind == OpKind::AdaNorm {
        s.push_str(&format!(", c {}, k {}", p.c, p.k));
    }
    s.push(')');
    s
}

/// An error for a model that has nothing of the kind the command changes.
pub fn nothing_to_do(what: &str) -> Error {
    Error::msg(format!("no {what} found: the output would equal the input"))
}

#[cfg(test)]
mod tests {
    use super::channels_last_perms;

    #[test]
    fn channels_last_permutations_invert_each_other() {
        assert_eq!(channels_last_perms(3), (vec![0, 2, 1], vec![0, 2, 1]));
        assert_eq!(channels_last_perms(4), (vec![0, 2, 3, 1], vec![0, 3, 1, 2]));
        for rank in 3..7 {
            let (to_last, to_first) = channels_last_perms(rank);
            assert_eq!(to_last[rank - 1], 1, "axis 1 goes last");
            let round_trip: Vec<i64> = to_first.iter().map(|&i| to_last[i as usize]).collect();
            assert_eq!(round_trip, (0..rank as i64).collect::<Vec<_>>());
        }
    }
}
