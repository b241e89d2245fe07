//! Memory held by a model's ONNX Runtime sessions, as their arena allocators report it
//! (`OrtApi::AllocatorGetStats`). tract models report nothing: their memory is ordinary heap.

use std::collections::HashMap;
use std::ffi::CStr;

use ort::AsPointer;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;

/// What a model's allocators hold on its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStats {
    /// Bytes in use by tensors now.
    pub in_use_bytes: u64,
    /// Bytes the arenas have reserved from the device (what the model costs the device).
    pub reserved_bytes: u64,
    /// Most bytes in use at once since the model was loaded.
    pub peak_bytes: u64,
}

impl MemoryStats {
    fn add(&mut self, other: MemoryStats) {
        self.in_use_bytes += other.in_use_bytes;
        self.reserved_bytes += other.reserved_bytes;
        self.peak_bytes += other.peak_bytes;
    }
}

/// The arena allocator a session uses on its device (`cuda_device`, or the CPU), kept next to the
/// session so that reading its statistics never waits for an inference.
pub(crate) fn arena_allocator(session: &Session, cuda_device: Option<i32>) -> Option<Allocator> {
    let info = match cuda_device {
        None => MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Arena,
            MemoryType::Default,
        ),
        Some(id) => MemoryInfo::new(
            AllocationDevice::CUDA,
            id,
            AllocatorType::Arena,
            MemoryType::Default,
        ),
    };
    Allocator::new(session, info.ok()?).ok()
}

/// Sums the statistics of `allocators` (`None` when ONNX Runtime reports none, e.g. arena off).
pub(crate) fn allocators_memory(allocators: &[Allocator]) -> Option<MemoryStats> {
    let mut total = MemoryStats::default();
    let mut any = false;
    for alloc in allocators {
        if let Some(stats) = allocator_stats(alloc) {
            let get = |k: &str| {
                stats
                    .get(k)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            total.add(MemoryStats {
                in_use_bytes: get("InUse"),
                reserved_bytes: get("TotalAllocated"),
                peak_bytes: get("MaxInUse"),
            });
            any = true;
        }
    }
    any.then_some(total)
}

/// The key/value statistics of an allocator (`InUse`, `TotalAllocated`, `MaxInUse`, `NumAllocs`, …).
fn allocator_stats(alloc: &Allocator) -> Option<HashMap<String, String>> {
    let api = ort::api();
    let mut kvp: *mut ort::sys::OrtKeyValuePairs = std::ptr::null_mut();
    // SAFETY: `alloc` is a live allocator; on success ONNX Runtime hands us `kvp`, which we release
    // below after copying its strings; a failed call returns a status we release.
    let status = unsafe { (api.AllocatorGetStats)(alloc.ptr(), &mut kvp) };
    if !status.0.is_null() {
        unsafe { (api.ReleaseStatus)(status.0) };
        return None;
    }
    if kvp.is_null() {
        return None;
    }
    let mut keys: *const *const std::ffi::c_char = std::ptr::null();
    let mut values: *const *const std::ffi::c_char = std::ptr::null();
    let mut n: usize = 0;
    let mut out = HashMap::new();
    // SAFETY: `kvp` is valid until released; the arrays hold `n` NUL-terminated strings it owns.
    unsafe {
        (api.GetKeyValuePairs)(kvp, &mut keys, &mut values, &mut n);
        for i in 0..n {
            let (k, v) = (*keys.add(i), *values.add(i));
            if k.is_null() || v.is_null() {
                continue;
            }
            out.insert(
                CStr::from_ptr(k).to_string_lossy().into_owned(),
                CStr::from_ptr(v).to_string_lossy().into_owned(),
            );
        }
        (api.ReleaseKeyValuePairs)(kvp);
    }
    Some(out)
}
