//! Saving a model atomically: the protobuf is streamed into a temporary file beside the
//! destination (no whole-model buffer in memory), synced, then renamed over the destination.
//! A failure at any point leaves no half-written output behind.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use bytes::buf::UninitSlice;
use bytes::BufMut;
use prost::Message;

use super::proto::ModelProto;
use crate::error::{Error, Result};

/// Writes `model` to `dest` (atomically, see [`crate::atomic_file`]). Refuses to replace an
/// existing file unless `overwrite`.
pub fn save_model(model: &ModelProto, dest: &Path, overwrite: bool) -> Result<()> {
    crate::atomic_file::write_atomically(dest, overwrite, |file| {
        let mut sink = FileSink::new(file);
        model
            .encode(&mut sink)
            .map_err(|e| Error::with_source("protobuf encoding failed", e))?;
        sink.finish()
            .map_err(|e| Error::with_source("cannot write the output", e))
    })
}

const SINK_CAPACITY: usize = 1 << 20;

/// A `BufMut` that flushes to a file whenever its buffer fills, so prost can encode a model of
/// any size with a fixed-size buffer. Large payloads (`put_slice`) bypass the buffer.
struct FileSink {
    file: File,
    buf: Vec<u8>,
    error: Option<std::io::Error>,
}

impl FileSink {
    fn new(file: File) -> Self {
        FileSink {
            file,
            buf: Vec::with_capacity(SINK_CAPACITY),
            error: None,
        }
    }

    fn flush_buf(&mut self) {
        if self.error.is_none() && !self.buf.is_empty() {
            if let Err(e) = self.file.write_all(&self.buf) {
                self.error = Some(e);
            }
        }
        self.buf.clear();
    }

    fn finish(mut self) -> std::io::Result<File> {
        self.flush_buf();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(self.file),
        }
    }
}

// SAFETY: `chunk_mut` hands out the vector's spare capacity, and `advance_mut` only extends the
// length over bytes the caller has written, as the trait requires.
unsafe impl BufMut for FileSink {
    fn remaining_mut(&self) -> usize {
        isize::MAX as usize
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.buf.len() + cnt;
        assert!(len <= self.buf.capacity(), "advance_mut past the buffer");
        // SAFETY: the caller has initialised these `cnt` bytes (the trait's contract), and the
        // assert keeps the length within the allocation.
        unsafe { self.buf.set_len(len) };
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.buf.len() == self.buf.capacity() {
            self.flush_buf();
        }
        UninitSlice::uninit(self.buf.spare_capacity_mut())
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SINK_CAPACITY / 4 {
            self.flush_buf();
            if self.error.is_none() {
                if let Err(e) = self.file.write_all(src) {
                    self.error = Some(e);
                }
            }
            return;
        }
        if self.buf.capacity() - self.buf.len() < src.len() {
            self.flush_buf();
        }
        self.buf.extend_from_slice(src);
    }
}
