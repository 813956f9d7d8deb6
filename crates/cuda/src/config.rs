//! The kernel table (mirrors the entry points of `kernels/adanorm.cu`) and the choice of kernel
//! for a row length. Pure Rust, so it is tested without CUDA.

use std::sync::OnceLock;

use crate::dtype::DType;

/// Rows per 128-thread block of the warp strategy (`WARP_ROWS` in the .cu).
pub const WARP_ROWS: u32 = 4;
/// Threads per block of the loop strategy (`LOOP_THREADS` in the .cu).
pub const LOOP_THREADS: u32 = 1024;
/// Most elements one thread keeps in registers.
pub const MAX_ELEMS: u32 = 32;
/// Thread counts of the block strategy.
const BLOCK_THREADS: [u32; 4] = [128, 256, 512, 1024];
/// Elements per thread of the block strategy, vectorised and scalar (32 scalar loads spill).
const BLOCK_ELEMS_VEC: [u32; 3] = [8, 16, 32];
const BLOCK_ELEMS_SCALAR: [u32; 2] = [8, 16];

/// How rows are spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// One warp per row, [`WARP_ROWS`] rows per block, the row in registers.
    Warp,
    /// One block per row, the row in registers.
    Block,
    /// One block per row, three passes over global memory (rows beyond the register budget).
    Loop,
}

/// One entry point of the PTX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    pub strategy: Strategy,
    /// Threads sharing one row.
    pub threads_per_row: u32,
    /// Elements per thread kept in registers (0 for [`Strategy::Loop`]).
    pub elems: u32,
    /// 16-byte loads and stores (needs aligned pointers and `row_len % vector_width == 0`).
    pub vectorised: bool,
}

impl Kernel {
    /// The entry point's name in the PTX.
    pub fn name(&self, dtype: DType) -> String {
        let kind = if self.vectorised { "v" } else { "s" };
        match self.strategy {
            Strategy::Loop => format!("adanorm_{}_loop_{kind}", dtype.name()),
            _ => format!(
                "adanorm_{}_t{}_e{}_{kind}",
                dtype.name(),
                self.threads_per_row,
                self.elems
            ),
        }
    }

    /// Longest row this kernel takes.
    pub fn capacity(&self) -> usize {
        match self.strategy {
            Strategy::Loop => usize::MAX,
            _ => self.threads_per_row as usize * self.elems as usize,
        }
    }

    pub fn block_threads(&self) -> u32 {
        match self.strategy {
            Strategy::Warp => 32 * WARP_ROWS,
            _ => self.threads_per_row,
        }
    }

    pub fn rows_per_block(&self) -> u32 {
        match self.strategy {
            Strategy::Warp => WARP_ROWS,
            _ => 1,
        }
    }
}

/// Every entry point for `dtype`, in a fixed order (the module cache indexes by position).
pub fn table(dtype: DType) -> &'static [Kernel] {
    static TABLES: OnceLock<[Vec<Kernel>; 3]> = OnceLock::new();
    &TABLES.get_or_init(|| DType::ALL.map(build_table))[dtype.index()]
}

fn build_table(dtype: DType) -> Vec<Kernel> {
    let row = |strategy, threads_per_row, elems, vectorised| Kernel {
        strategy,
        threads_per_row,
        elems,
        vectorised,
    };
    let mut out = Vec::new();
    let v = dtype.vector_width() as u32;
    let mut e = v;
    while e <= MAX_ELEMS {
        out.push(row(Strategy::Warp, 32, e, true));
        e *= 2;
    }
    let mut e = 1;
    while e <= MAX_ELEMS {
        out.push(row(Strategy::Warp, 32, e, false));
        e *= 2;
    }
    for threads in BLOCK_THREADS {
        for e in BLOCK_ELEMS_VEC {
            out.push(row(Strategy::Block, threads, e, true));
        }
        for e in BLOCK_ELEMS_SCALAR {
            out.push(row(Strategy::Block, threads, e, false));
        }
    }
    for vectorised in [true, false] {
        out.push(row(Strategy::Loop, LOOP_THREADS, 0, vectorised));
    }
    out
}

/// The kernel for rows of `row_len` elements: the register kernel of the smallest capacity that
/// holds the row (ties: a warp before a block, then fewer threads with more elements each: more
/// bytes in flight per thread hide the reductions' latency better, measured on an H200), or
/// the loop kernel for rows longer than any. Returns its index in [`table`].
pub fn choose(dtype: DType, row_len: usize, vectorised: bool) -> usize {
    let table = table(dtype);
    let fits = table
        .iter()
        .enumerate()
        .filter(|(_, k)| {
            k.vectorised == vectorised && k.strategy != Strategy::Loop && k.capacity() >= row_len
        })
        .min_by_key(|(_, k)| {
            (
                k.capacity(),
                k.strategy != Strategy::Warp,
                k.threads_per_row,
            )
        });
    match fits {
        Some((i, _)) => i,
        None => table
            .iter()
            .position(|k| k.strategy == Strategy::Loop && k.vectorised == vectorised)
            .expect("the table has both loop kernels"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(dtype: DType, n: usize, vec: bool) -> Kernel {
        table(dtype)[choose(dtype, n, vec)]
    }

    #[test]
    fn names_are_unique_and_match_the_cu_scheme() {
        for dtype in DType::ALL {
            let names: Vec<String> = table(dtype).iter().map(|k| k.name(dtype)).collect();
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len());
        }
        assert_eq!(
            chosen(DType::F32, 1024, true).name(DType::F32),
            "adanorm_f32_t32_e32_v"
        );
        assert_eq!(
            chosen(DType::F16, 1, false).name(DType::F16),
            "adanorm_f16_t32_e1_s"
        );
        assert_eq!(
            chosen(DType::BF16, 65536, true).name(DType::BF16),
            "adanorm_bf16_loop_v"
        );
    }

    #[test]
    fn short_rows_get_a_warp_long_rows_a_block_longest_the_loop() {
        for dtype in DType::ALL {
            for vec in [true, false] {
                for n in [0, 1, 31, 32, 33, 768, 1000, 1024] {
                    let k = chosen(dtype, n, vec);
                    assert_eq!(k.strategy, Strategy::Warp, "{dtype:?} {n} {vec}");
                    assert!(k.capacity() >= n);
                }
                let longest = if vec { 32768 } else { 16384 };
                for n in [1025, 4096, 8192, longest] {
                    let k = chosen(dtype, n, vec);
                    assert_eq!(k.strategy, Strategy::Block, "{dtype:?} {n} {vec}");
                    assert!(k.capacity() >= n && k.capacity() < 2 * n, "{k:?} for {n}");
                }
                assert_eq!(chosen(dtype, longest + 1, vec).strategy, Strategy::Loop);
                assert_eq!(chosen(dtype, 1 << 40, vec).strategy, Strategy::Loop);
            }
        }
    }

    #[test]
    fn vectorised_choice_stays_vectorised() {
        for dtype in DType::ALL {
            for n in [8usize, 256, 4096, 100_000] {
                assert!(chosen(dtype, n, true).vectorised);
                assert!(!chosen(dtype, n, false).vectorised);
            }
        }
    }
}
