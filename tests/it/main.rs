//! The integration tests, one binary (one link on a 2-core CI instead of eleven), one module
//! per concern. `cargo test --test it <module>::` runs one of them.

mod common;
mod fuzz;

mod centred_rms;
mod cli;
mod conformance;
mod embed_layer_norm;
mod functions;
mod fuzz_rewrites;
mod initializer_inputs;
mod inner_roundings;
mod matcher_forms;
mod model_io;
mod paper_adanorm;
mod residual;
mod run_verify;
mod sharing;
mod subgraphs;
mod zoo;
mod zoo_tract;
