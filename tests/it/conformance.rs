//! The ONNX conformance cases for LayerNormalization (fixtures/conformance, made by its make.py
//! from onnx 1.23.2): the op itself, and its function body expanded into a graph at opsets 17 and
//! 18. The expanded graphs must be recognised as the same LayerNorm as the op: same axis (in X's
//! terms, not the flattened view's), the same Scale/B, and the Mean/InvStdDev outputs.

use std::path::{Path, PathBuf};

use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::load_model;
use adanorm_onnx::patterns::{find_matches, Family, Match};

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/conformance");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    v.sort();
    v
}

fn one_match(case: &Path) -> Match {
    let model = load_model(&case.join("model.onnx")).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let mut ms = find_matches(&g);
    assert_eq!(ms.len(), 1, "{}: {ms:#?}", case.display());
    ms.remove(0)
}

#[test]
fn expanded_function_bodies_match_the_op_they_expand() {
    let all = cases();
    let fused: Vec<&PathBuf> = all
        .iter()
        .filter(|p| !p.to_string_lossy().contains("_expanded"))
        .collect();
    assert_eq!(fused.len(), 19);
    for f in fused {
        let op = one_match(f);
        assert!(op.form_name().contains("fused"));
        for suffix in ["_expanded", "_expanded_ver18"] {
            let expanded = PathBuf::from(format!("{}{suffix}", f.display()));
            let m = one_match(&expanded);
            let name = expanded.display();
            assert_eq!(m.family, Family::LayerNorm, "{name}");
            assert!(m.rewritable, "{name}: {:?}", m.reason);
            assert_eq!(m.input, "X", "{name}");
            assert_eq!(m.output, "Y", "{name}");
            assert_eq!(m.axis, op.axis, "{name}: axis in X's terms");
            assert_eq!(m.epsilon, op.epsilon, "{name}");
            assert_eq!(
                (m.scale.as_deref(), m.bias.as_deref()),
                (Some("W"), Some("B")),
                "{name}"
            );
            assert_eq!(
                (m.mean_output.as_deref(), m.inv_std_output.as_deref()),
                (Some("Mean"), Some("InvStdDev")),
                "{name}"
            );
            // Every node of the expansion is covered, except dead code (the body computes a
            // Rank it does not use for negative axes) and what feeds it.
            let model = load_model(&expanded.join("model.onnx")).unwrap();
            let g = GraphIndex::build(&model).unwrap();
            let dead = |id: usize| {
                g.node(id)
                    .output
                    .iter()
                    .all(|o| g.consumers(o).is_empty() && !g.is_graph_output(o))
            };
            for (id, node) in g.nodes() {
                if !m.nodes.contains(&id) {
                    let feeds_dead = node
                        .output
                        .iter()
                        .any(|o| g.consumers(o).iter().any(|&c| dead(c)));
                    assert!(
                        dead(id) || feeds_dead,
                        "{name}: node {} left out",
                        g.label(id)
                    );
                }
            }
        }
    }
}
