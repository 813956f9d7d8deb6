//! Test hooks: deliberate panics and a record of which threads ran rows, so the tests can prove
//! that panics never cross into onnxruntime and that rows run on onnxruntime's intra-op pool.
//!
//! Inert unless the process environment has `ADANORM_ORT_TEST_HOOKS=1` when a session creates
//! the kernel; then the string attribute `_test_panic` (`"create"`, `"compute"`, `"worker"`)
//! picks where to panic, and every compute call records its worker threads for
//! [`adanorm_ort_test_threads_seen`].

use std::collections::HashSet;
use std::sync::Mutex;
use std::thread::ThreadId;

use crate::attrs::NodeInfo;

/// The environment switch.
pub const ENV: &str = "ADANORM_ORT_TEST_HOOKS";
/// With [`ENV`]: register the CUDA records even where they cannot run, to test that they
/// coexist with CPU sessions on machines without a GPU.
pub const CUDA_RECORDS_ENV: &str = "ADANORM_ORT_TEST_CUDA_RECORDS";

/// Whether both switches are on.
pub fn force_cuda_records() -> bool {
    std::env::var(ENV).as_deref() == Ok("1")
        && std::env::var(CUDA_RECORDS_ENV).as_deref() == Ok("1")
}

/// The attribute naming where to panic.
pub const PANIC_ATTR: &str = "_test_panic";

/// A kernel's hooks; `Hooks::default()` is all off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks {
    panic_at: Option<Place>,
    record_threads: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Create,
    Compute,
    Worker,
}

static THREADS_SEEN: Mutex<Option<HashSet<ThreadId>>> = Mutex::new(None);

impl Hooks {
    pub fn from_node(node: &NodeInfo) -> Hooks {
        if std::env::var(ENV).as_deref() != Ok("1") {
            return Hooks::default();
        }
        let panic_at = match node.string(PANIC_ATTR).as_deref() {
            Some("create") => Some(Place::Create),
            Some("compute") => Some(Place::Compute),
            Some("worker") => Some(Place::Worker),
            _ => None,
        };
        Hooks {
            panic_at,
            record_threads: true,
        }
    }

    pub fn at_create(&self) {
        if self.panic_at == Some(Place::Create) {
            panic!("deliberate test panic in CreateKernelV2 ({PANIC_ATTR} = \"create\")");
        }
    }

    pub fn at_compute(&self) {
        if self.panic_at == Some(Place::Compute) {
            panic!("deliberate test panic in KernelComputeV2 ({PANIC_ATTR} = \"compute\")");
        }
    }

    /// Called by each thread-pool task with its chunk index.
    pub fn at_worker(&self, chunk: usize) {
        if self.record_threads {
            let mut seen = THREADS_SEEN.lock().unwrap_or_else(|e| e.into_inner());
            seen.get_or_insert_with(HashSet::new)
                .insert(std::thread::current().id());
        }
        if self.panic_at == Some(Place::Worker) && chunk == 0 {
            panic!("deliberate test panic in a thread-pool task ({PANIC_ATTR} = \"worker\")");
        }
    }
}

/// How many distinct threads have run row chunks since the last call (test hooks on); resets the
/// record. Exported for the Python tests (ctypes).
#[no_mangle]
pub extern "C" fn adanorm_ort_test_threads_seen() -> usize {
    crate::status::guard_value(0, || {
        let mut seen = THREADS_SEEN.lock().unwrap_or_else(|e| e.into_inner());
        seen.take().map_or(0, |s| s.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_hooks_do_nothing() {
        let h = Hooks::default();
        h.at_create();
        h.at_compute();
        h.at_worker(0);
    }

    #[test]
    fn worker_hook_panics_on_chunk_0_and_records_threads() {
        let h = Hooks {
            panic_at: Some(Place::Worker),
            record_threads: true,
        };
        h.at_worker(1);
        assert!(std::panic::catch_unwind(|| h.at_worker(0)).is_err());
        assert!(adanorm_ort_test_threads_seen() >= 1);
    }
}
