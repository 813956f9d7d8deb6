//! adanorm-onnx: find every LayerNorm-family subgraph in an ONNX model and rewrite it into the
//! `ai.adanorm` ops (AdaNorm, LayerNorm-simple). See ARCHITECTURE.md for the map.

pub mod atomic_file;
pub mod cli;
pub mod entry;
pub mod error;
pub mod graph;
pub mod onnx;
pub mod patterns;
pub mod report;

pub use error::{Error, Result};
pub mod npz;
pub mod rewrite;
pub mod runner;
