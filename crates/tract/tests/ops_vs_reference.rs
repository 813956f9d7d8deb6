//! One `ai.adanorm` node per model, run through `run_model`, against the float64 oracle
//! `adanorm_kernels::reference`: both ops, every attribute combination, both axis kinds, with
//! and without (broadcast) Scale/B, the Mean/InvStdDev outputs, f32/f16/f64.

mod common;

use adanorm_kernels::{reference, Params, Variant};
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
        ]);
        let outputs = trim(vec![
            "Y",
            if self.mean { "Mean" } else { "" },
            if self.inv_std_dev { "InvStdDev" } else { "" },
        ]);
        let stats_type = if t == DOUBLE { DOUBLE } else { FLOAT };
        let mut graph_inputs = vec![value_info("X", t, Some(&dims(&self.shape)))];
        let mut initializers = vec![];
        let mut given = vec![("X".to_string(), tract_tensor(t, &self.shape, &x))];
        for (name, p) in [("S", &scale), ("B", &bias)] {
            if let Some((data, shape)) = p {
                if self.params_as_inputs {
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
            .map(|&o| value_info(o, if o == "Y" { t } else { stats_type }, None))
            .collect();
        let model = model(
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
        let path = save(&model);
        let results =
            adanorm_tract::run_model(&path, given).unwrap_or_else(|e| panic!("{self:?}: {e:?}"));

        let want = reference(
            &x,
            &self.shape,
            self.axis,
            scale.as_ref().map(|(d, s)| (d.as_slice(), s.as_slice())),
            bias.as_ref().map(|(d, s)| (d.as_slice(), s.as_slice())),
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
        assert_eq!(
            results.len(),
            outputs.iter().filter(|o| !o.is_empty()).count()
        );
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
