//! The differential fuzzer's parts, one concept per module (driver: `tests/it/fuzz_rewrites.rs`).

pub mod commands;
pub mod grammar;
pub mod graph;
pub mod rng;
pub mod structure;
pub mod surround;

thread_local! {
    /// The last panic's place and message (set by the driver's hook), for the failure report.
    pub static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// Set in the fuzzer's worker threads: their panics are the hook's to record.
    pub static IN_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
