//! Helpers for this crate's tests and benchmark: a current context, device buffers, copies,
//! streams. Not what a runtime uses: ONNX Runtime owns its memory, streams and context.

use std::ffi::c_void;

use crate::driver::{self, driver, CuContext, CuDevicePtr, CuStream};

/// Makes the primary context of device `ordinal` current on the calling thread (what ORT's CUDA
/// EP, through the runtime API, does on its threads). The context is retained for the process.
pub fn make_primary_current(ordinal: i32) -> Result<(), String> {
    let d = driver()?;
    let mut dev = 0;
    let mut ctx: CuContext = std::ptr::null_mut();
    // SAFETY: the calls write a device handle and a context handle; the retained primary context
    // stays alive for the process.
    unsafe {
        driver::check(d, (d.device_get)(&mut dev, ordinal), "cuDeviceGet")?;
        driver::check(
            d,
            (d.primary_ctx_retain)(&mut ctx, dev),
            "cuDevicePrimaryCtxRetain",
        )?;
        driver::check(d, (d.ctx_set_current)(ctx), "cuCtxSetCurrent")
    }
}

/// Loads PTX from `dir` (files `adanorm_{f32,f16,bf16,misc}.ptx` with the same entry points)
/// instead of the embedded PTX, for comparing kernel variants in one process. Call before the
/// first launch; a module already loaded into a context stays.
pub fn use_ptx_from(dir: &std::path::Path) -> Result<(), String> {
    crate::module::set_ptx_dir(dir.to_path_buf())
}

/// Waits for all work of the current context.
pub fn synchronize() -> Result<(), String> {
    let d = driver()?;
    // SAFETY: no arguments; needs a current context, else it returns an error.
    driver::check(d, unsafe { (d.ctx_synchronize)() }, "cuCtxSynchronize")
}

/// Device memory of the current context, freed on drop.
pub struct DeviceBuffer {
    ptr: CuDevicePtr,
    bytes: usize,
}

impl DeviceBuffer {
    pub fn alloc(bytes: usize) -> Result<DeviceBuffer, String> {
        let d = driver()?;
        let mut ptr = 0;
        // cuMemAlloc refuses 0 bytes; keep one byte so every buffer has an address.
        // SAFETY: writes the new allocation's address.
        let r = unsafe { (d.mem_alloc)(&mut ptr, bytes.max(1)) };
        driver::check(d, r, &format!("cuMemAlloc({bytes})"))?;
        Ok(DeviceBuffer { ptr, bytes })
    }

    pub fn from_bytes(data: &[u8]) -> Result<DeviceBuffer, String> {
        let buf = DeviceBuffer::alloc(data.len())?;
        buf.write(0, data)?;
        Ok(buf)
    }

    pub fn from_f32(data: &[f32]) -> Result<DeviceBuffer, String> {
        DeviceBuffer::from_bytes(
            &data
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        )
    }

    pub fn from_u16(data: &[u16]) -> Result<DeviceBuffer, String> {
        DeviceBuffer::from_bytes(
            &data
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        )
    }

    /// Copies `data` to byte `offset`, then waits for the whole context: a copy from pageable
    /// memory may still be in flight when cuMemcpyHtoD returns, and kernels on a non-blocking
    /// stream would not wait for it.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), String> {
        assert!(offset + data.len() <= self.bytes, "write past the buffer");
        if data.is_empty() {
            return Ok(());
        }
        let d = driver()?;
        // SAFETY: the destination range lies inside this allocation (checked above).
        let r = unsafe {
            (d.memcpy_htod)(
                self.ptr + offset as u64,
                data.as_ptr() as *const c_void,
                data.len(),
            )
        };
        driver::check(d, r, "cuMemcpyHtoD")?;
        synchronize()
    }

    /// The whole buffer (synchronous; waits for the legacy stream's work).
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut out = vec![0u8; self.bytes];
        if self.bytes > 0 {
            let d = driver()?;
            // SAFETY: `out` has room for the whole allocation.
            let r =
                unsafe { (d.memcpy_dtoh)(out.as_mut_ptr() as *mut c_void, self.ptr, self.bytes) };
            driver::check(d, r, "cuMemcpyDtoH")?;
        }
        Ok(out)
    }

    pub fn to_f32(&self) -> Result<Vec<f32>, String> {
        Ok(self
            .to_bytes()?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn to_u16(&self) -> Result<Vec<u16>, String> {
        Ok(self
            .to_bytes()?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    /// The device address, as the raw pointer [`crate::launch`] takes.
    pub fn ptr(&self) -> *mut c_void {
        self.ptr as usize as *mut c_void
    }

    /// The device address `offset` bytes in (for misaligned-pointer tests).
    pub fn ptr_at(&self, offset: usize) -> *mut c_void {
        assert!(offset <= self.bytes);
        (self.ptr as usize + offset) as *mut c_void
    }

    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if let Ok(d) = driver() {
            // SAFETY: frees the allocation made in `alloc`, once.
            unsafe { (d.mem_free)(self.ptr) };
        }
    }
}

/// A non-blocking stream of the current context, destroyed on drop.
pub struct Stream(CuStream);

impl Stream {
    pub fn new() -> Result<Stream, String> {
        let d = driver()?;
        let mut s: CuStream = std::ptr::null_mut();
        // SAFETY: writes the new stream; flag 1 = CU_STREAM_NON_BLOCKING, as ORT's own streams.
        driver::check(d, unsafe { (d.stream_create)(&mut s, 1) }, "cuStreamCreate")?;
        Ok(Stream(s))
    }

    /// The handle [`crate::launch`] takes.
    pub fn raw(&self) -> *mut c_void {
        self.0
    }

    pub fn synchronize(&self) -> Result<(), String> {
        let d = driver()?;
        // SAFETY: the stream is live.
        driver::check(
            d,
            unsafe { (d.stream_synchronize)(self.0) },
            "cuStreamSynchronize",
        )
    }

    /// Device-to-device copy on this stream (the driver's own copy path).
    pub fn copy(&self, dst: &DeviceBuffer, src: &DeviceBuffer, bytes: usize) -> Result<(), String> {
        assert!(bytes <= dst.len() && bytes <= src.len());
        let d = driver()?;
        // SAFETY: both ranges lie inside live allocations.
        let r = unsafe { (d.memcpy_dtod_async)(dst.ptr, src.ptr, bytes, self.0) };
        driver::check(d, r, "cuMemcpyDtoDAsync")
    }

    /// The same copy by a plain 16-byte-per-thread kernel.
    pub fn copy_kernel(
        &self,
        dst: &DeviceBuffer,
        src: &DeviceBuffer,
        bytes: usize,
    ) -> Result<(), String> {
        assert!(bytes <= dst.len() && bytes <= src.len());
        // SAFETY: both ranges lie inside live allocations of the current context.
        unsafe { crate::launch::launch_copy_kernel(self.0, dst.ptr(), src.ptr(), bytes) }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Ok(d) = driver() {
            // SAFETY: destroys the stream made in `new`, once.
            unsafe { (d.stream_destroy)(self.0) };
        }
    }
}
