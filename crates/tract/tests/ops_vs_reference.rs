//! One `ai.adanorm` node per model, run through `run_model`, against the float64 oracle
//! `adanorm_kernels::reference`: both ops, every attribute combination, both axis kinds, with
//! and without (broadcast) Scale/B, the Mean/InvStdDev outputs, f32/f16/f64; and version 2's
//! residual slots (`Skip` in every broadcast form, `Bias`, `Sum`) against
//! `adanorm_kernels::reference_residual`.

mod common;

use adanorm_kernels::{reference_residual, Params, RefResidual, Variant};
use common::*;

const ADA: Variant = Variant::AdaNorm { c: 1.5, k: 0.25 };
const SIMPLE: Variant = Variant::LayerNormSimple;

#[derive(Debug, Clone)]
struct Case {
    variant: Variant,
    elem_type: i32,
    shape: Vec<usize>,
    axis: i64,
    epsilon: f32,
    unbiased: i64,
    eps_in_sqrt: i64,
    scale: Option<Vec<usize>>,
    bias: Option<Vec<usize>>,
    mean: bool,
    inv_std_dev: bool,
    /// Added to every element of X: rows with a large mean.
    offset: f64,
    /// Scale and B as graph inputs (runtime values) instead of initializers.
    params_as_inputs: bool,
    /// The variant whose reference the output must match (normally `variant`).
    oracle: Variant,
    /// Version 2: the shape of `Skip`, of the residual `Bias`, and whether `Sum` is asked for.
    skip: Option<Vec<usize>>,
    residual_bias: Option<Vec<usize>>,
    sum: bool,
}

impl Case {
    fn new(variant: Variant, elem_type: i32, shape: &[usize], axis: i64) -> Case {
        Case {
            variant,
            elem_type,
            shape: shape.to_vec(),
            axis,
            epsilon: 1e-5,
            unbiased: 0,
            eps_in_sqrt: 1,
            scale: None,
            bias: None,
            mean: false,
            inv_std_dev: false,
            offset: 0.0,
            params_as_inputs: false,
            oracle: variant,
            skip: None,
            residual_bias: None,
            sum: false,
        }
    }

    fn oracle_params(&self) -> Params {
        Params::from_attributes(
            self.oracle,
            self.epsilon as f64,
            self.unbiased,
            self.eps_in_sqrt,
        )
        .unwrap()
    }

    /// Builds, runs and checks the case.
    fn check(&self) {
        let t = self.elem_type;
        let n: usize = self.shape.iter().product();
        let x: Vec<f64> = values(n, 1).iter().map(|v| v + self.offset).collect();
        let x = rounded(t, &x);
        let param = |shape: &Option<Vec<usize>>, seed| {
            shape.as_ref().map(|s| {
                let data = values(s.iter().product(), seed);
                (rounded(t, &data), s.clone())
            })
        };
        let scale = param(&self.scale, 2);
        let bias = param(&self.bias, 3);
        let skip = param(&self.skip, 4);
        let residual_bias = param(&self.residual_bias, 5);
        let residual = skip.is_some() || residual_bias.is_some() || self.sum;

        let mut attributes = vec![
            attr_i("axis", self.axis),
            attr_f("epsilon", self.epsilon),
            attr_i("unbiased", self.unbiased),
            attr_i("eps_in_sqrt", self.eps_in_sqrt),
        ];
        if let Variant::AdaNorm { c, k } = self.variant {
            attributes.push(attr_f("c", c as f32));
            attributes.push(attr_f("k", k as f32));
        }
        let inputs = trim(vec![
            "X",
            if scale.is_some() { "S" } else { "" },
            if bias.is_some() { "B" } else { "" },
            if skip.is_some() { "Skip" } else { "" },
            if residual_bias.is_some() { "Bias" } else { "" },
        ]);
        let outputs = trim(vec![
            "Y",
            if self.mean { "Mean" } else { "" },
            if self.inv_std_dev { "InvStdDev" } else { "" },
            if self.sum { "Sum" } else { "" },
        ]);
        let stats_type = if t == DOUBLE { DOUBLE } else { FLOAT };
        let mut graph_inputs = vec![value_info("X", t, Some(&dims(&self.shape)))];
        let mut initializers = vec![];
        let mut given = vec![("X".to_string(), tract_tensor(t, &self.shape, &x))];
        for (name, p) in [
            ("S", &scale),
            ("B", &bias),
            ("Skip", &skip),
            ("Bias", &residual_bias),
        ] {
            if let Some((data, shape)) = p {
                // Skip is an activation: always a run-time input.
                if self.params_as_inputs || name == "Skip" {
                    graph_inputs.push(value_info(name, t, Some(&dims(shape))));
                    given.push((name.to_string(), tract_tensor(t, shape, data)));
                } else {
                    initializers.push(tensor_of(t, name, shape, data));
                }
            }
        }
        let graph_outputs = outputs
            .iter()
            .filter(|o| !o.is_empty())
            .map(|&o| {
                let is_stats = o == "Mean" || o == "InvStdDev";
                value_info(o, if is_stats { stats_type } else { t }, None)
            })
            .collect();
        let mut model = model(
            graph(
                vec![{
                    let mut n = node(
                        self.variant.op_type(),
                        "ai.adanorm",
                        &inputs,
                        &outputs,
                        attributes,
                    );
                    n.name = "norm".into();
                    n
                }],
                graph_inputs,
                graph_outputs,
                initializers,
            ),
            17,
        );
        if residual {
            model.opset_import[1].version = 2;
        }
        let path = save(&model);
        let results =
            adanorm_tract::run_model(&path, given).unwrap_or_else(|e| panic!("{self:?}: {e:?}"));

        let want = reference_residual(
            &x,
            &self.shape,
            self.axis,
            as_ref(&scale),
            as_ref(&bias),
            &RefResidual {
                skip: as_ref(&skip),
                bias: as_ref(&residual_bias),
                round: rounding(t),
            },
            &self.oracle_params(),
        )
        .unwrap();
        let output = |name: &str| {
            let (_, tensor) = results
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{self:?}: no output {name}"));
            tensor
        };
        let y = output("Y");
        assert_eq!(y.shape(), self.shape.as_slice());
        assert_eq!(y.datum_type(), tract_tensor(t, &[], &[0.0]).datum_type());
        assert_close(&format!("{self:?} Y"), &as_f64(y), &want.y, tolerance(t));
        let rank = self.shape.len();
        let axis = if self.axis < 0 {
            self.axis + rank as i64
        } else {
            self.axis
        } as usize;
        let mut stats_shape = self.shape[..axis].to_vec();
        stats_shape.resize(rank, 1);
        for (wanted, name, values) in [
            (self.mean, "Mean", &want.mean),
            (self.inv_std_dev, "InvStdDev", &want.inv_std_dev),
        ] {
            if wanted {
                let s = output(name);
                assert_eq!(s.shape(), stats_shape.as_slice(), "{self:?} {name}");
                assert_eq!(
                    s.datum_type(),
                    tract_tensor(stats_type, &[], &[0.0]).datum_type()
                );
                assert_close(
                    &format!("{self:?} {name}"),
                    &as_f64(s),
                    values,
                    tolerance(stats_type),
                );
            }
        }
        if self.sum {
            let sum = output("Sum");
            assert_eq!(sum.shape(), self.shape.as_slice(), "{self:?} Sum");
            assert_eq!(sum.datum_type(), y.datum_type(), "{self:?} Sum");
            // S is rounded sums of T values, so the kernels must give it exactly.
            assert_close(&format!("{self:?} Sum"), &as_f64(sum), &want.sum, 0.0);
        }
        assert_eq!(
            results.len(),
            outputs.iter().filter(|o| !o.is_empty()).count()
        );
    }
}

/// `(values, shape)` borrowed, as the oracle takes its optional inputs.
fn as_ref(p: &Option<(Vec<f64>, Vec<usize>)>) -> Option<(&[f64], &[usize])> {
    p.as_ref().map(|(d, s)| (d.as_slice(), s.as_slice()))
}

/// Rounding to element type `elem_type`, as each `Add` the residual slots replace rounds.
fn rounding(elem_type: i32) -> fn(f64) -> f64 {
    match elem_type {
        FLOAT => |v| v as f32 as f64,
        FLOAT16 => |v| half::f16::from_f64(v).to_f64(),
        _ => |v| v,
    }
}

/// Drops trailing empty names: an absent optional input/output may also be left off the end.
fn trim(mut names: Vec<&str>) -> Vec<&str> {
    while names.last() == Some(&"") {
        names.pop();
    }
    names
}

/// Shapes of Scale and B; `None` leaves the input out.
type ParamShapes = (Option<Vec<usize>>, Option<Vec<usize>>);

/// Scale/B shapes to try for X.shape[axis:] = `normalized`: none, full, and broadcast ones.
fn param_forms(normalized: &[usize]) -> Vec<ParamShapes> {
    let last = *normalized.last().unwrap();
    let mut first_only = normalized.to_vec();
    *first_only.last_mut().unwrap() = 1;
    vec![
        (None, None),
        (Some(normalized.to_vec()), Some(normalized.to_vec())),
        (Some(first_only), None),
        (None, Some(vec![last])),
        (Some(vec![1]), Some(vec![1; normalized.len()])),
    ]
}

#[test]
fn every_attribute_combination_in_f32() {
    let shape = [2, 3, 8];
    let mut count = 0;
    for variant in [ADA, SIMPLE] {
        for axis in [-1, 1] {
            let normalized = if axis == -1 { &shape[2..] } else { &shape[1..] };
            for unbiased in [0, 1] {
                for eps_in_sqrt in [0, 1] {
                    for (ix, (scale, bias)) in param_forms(normalized).into_iter().enumerate() {
                        let mut case = Case::new(variant, FLOAT, &shape, axis);
                        case.unbiased = unbiased;
                        case.eps_in_sqrt = eps_in_sqrt;
                        case.epsilon = if eps_in_sqrt == 1 { 1e-5 } else { 0.25 };
                        case.scale = scale;
                        case.bias = bias;
                        case.mean = ix % 2 == 0;
                        case.inv_std_dev = ix % 3 != 1;
                        case.check();
                        count += 1;
                    }
                }
            }
        }
    }
    assert_eq!(count, 80);
}

#[test]
fn float16_and_float64() {
    for elem_type in [FLOAT16, DOUBLE] {
        for variant in [ADA, SIMPLE] {
            for (axis, normalized) in [(-1, vec![16]), (1, vec![3, 16])] {
                for unbiased in [0, 1] {
                    let mut case = Case::new(variant, elem_type, &[2, 3, 16], axis);
                    case.unbiased = unbiased;
                    case.eps_in_sqrt = unbiased;
                    case.scale = Some(normalized.clone());
                    case.bias = Some(vec![*normalized.last().unwrap()]);
                    case.mean = true;
                    case.inv_std_dev = true;
                    case.check();
                }
            }
        }
    }
}

#[test]
fn rows_with_mean_1e4_stay_accurate() {
    for elem_type in [FLOAT, DOUBLE] {
        for variant in [ADA, SIMPLE] {
            let mut case = Case::new(variant, elem_type, &[4, 768], -1);
            case.offset = 1e4;
            case.mean = true;
            case.inv_std_dev = true;
            case.scale = Some(vec![768]);
            case.check();
        }
    }
}

#[test]
fn absent_optional_inputs_and_outputs_keep_their_positions() {
    // Inputs X, "", B and outputs Y, "", InvStdDev: B must not be read as Scale, nor
    // InvStdDev returned as Mean.
    for variant in [ADA, SIMPLE] {
        let mut case = Case::new(variant, FLOAT, &[4, 16], -1);
        case.bias = Some(vec![16]);
        case.inv_std_dev = true;
        case.check();
    }
}

#[test]
fn scale_and_bias_given_at_run_time() {
    for variant in [ADA, SIMPLE] {
        let mut case = Case::new(variant, FLOAT, &[2, 5, 6], 1);
        case.scale = Some(vec![5, 1]);
        case.bias = Some(vec![5, 6]);
        case.params_as_inputs = true;
        case.mean = true;
        case.check();
    }
}

#[test]
fn axis_0_and_rank_1() {
    for variant in [ADA, SIMPLE] {
        Case::new(variant, FLOAT, &[2, 3, 4], 0).check();
        let mut case = Case::new(variant, FLOAT, &[10], -1);
        case.mean = true;
        case.check();
    }
}

#[test]
fn ada_norm_with_k_0_and_c_1_is_layer_norm_simple() {
    let mut ada = Case::new(Variant::AdaNorm { c: 1.0, k: 0.0 }, FLOAT, &[3, 12], -1);
    ada.scale = Some(vec![12]);
    ada.oracle = SIMPLE;
    ada.check();
}

/// Skip shapes for X of `[2, 3, 8]`: X's own, the row suffixes, and broadcasts that need
/// expanding (a 1 among the leading dims, a 1 inside the row, a scalar).
const SKIP_SHAPES: [&[usize]; 7] = [
    &[2, 3, 8],
    &[3, 8],
    &[1, 3, 8],
    &[8],
    &[2, 1, 8],
    &[3, 1],
    &[1],
];

#[test]
fn residual_slots_in_every_combination() {
    let shape = [2, 3, 8];
    let mut count = 0;
    for variant in [ADA, SIMPLE] {
        for axis in [-1, 1] {
            for skip in SKIP_SHAPES.iter().map(|s| Some(s.to_vec())).chain([None]) {
                for (ix, residual_bias) in
                    [None, Some(vec![8]), Some(vec![1])].into_iter().enumerate()
                {
                    for sum in [false, true] {
                        if skip.is_none() && residual_bias.is_none() && !sum {
                            continue;
                        }
                        let mut case = Case::new(variant, FLOAT, &shape, axis);
                        case.skip = skip.clone();
                        case.residual_bias = residual_bias.clone();
                        case.sum = sum;
                        case.scale = Some(vec![8]);
                        case.bias = (ix != 1).then(|| vec![8]);
                        case.mean = sum;
                        case.inv_std_dev = !sum || ix == 2;
                        case.unbiased = (count % 2) as i64;
                        case.check();
                        count += 1;
                    }
                }
            }
        }
    }
    assert_eq!(count, 2 * 2 * (8 * 3 * 2 - 1));
}

#[test]
fn residual_slots_in_float16_and_float64() {
    for elem_type in [FLOAT16, DOUBLE] {
        for variant in [ADA, SIMPLE] {
            for skip in [&[2, 3, 16][..], &[3, 16], &[2, 1, 16]] {
                let mut case = Case::new(variant, elem_type, &[2, 3, 16], -1);
                case.skip = Some(skip.to_vec());
                case.residual_bias = Some(vec![16]);
                case.sum = true;
                case.scale = Some(vec![16]);
                case.bias = Some(vec![16]);
                case.mean = true;
                case.inv_std_dev = true;
                case.check();
            }
        }
    }
}

#[test]
fn residual_inputs_given_as_initializers_and_at_run_time() {
    // The residual Bias is a weight (an initializer) in real models, Skip an activation.
    for params_as_inputs in [false, true] {
        let mut case = Case::new(ADA, FLOAT, &[4, 32], -1);
        case.skip = Some(vec![4, 32]);
        case.residual_bias = Some(vec![32]);
        case.params_as_inputs = params_as_inputs;
        case.sum = true;
        case.check();
    }
}

#[test]
fn a_sum_alone_is_x_normalised_and_x_itself() {
    let mut case = Case::new(SIMPLE, FLOAT, &[3, 10], -1);
    case.sum = true;
    case.mean = true;
    case.check();
}
