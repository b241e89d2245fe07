//! Spare buffers for the large, same-sized arrays every request of a model slot needs (an input
//! tensor, a decoded photo, a resized copy of it).
//!
//! A buffer of megabytes is mapped fresh from the kernel by the allocator and unmapped when freed,
//! so one allocated per request costs a page fault and the zeroing of every one of its pages, each
//! time: for CenterFace at 1280×736 (an 11 MB input tensor) that was 3 % of the gateway's CPU under
//! load. A [`Spares`] keeps a few such buffers, within a byte budget, for the next request to fill,
//! and only buffers of the sizes asked of it lately: a buffer no request will take (say, a speech
//! model's input, where nothing takes spares) is not kept at all.

use std::sync::Mutex;

/// Buffers under this size are left to the allocator, which reuses small blocks by itself.
const MIN_BYTES: usize = 1 << 20;
/// How many recently asked-for lengths decide which buffers are worth keeping.
const WANTED: usize = 4;

/// A bounded stock of spare `Vec<E>`s.
#[derive(Debug)]
pub struct Spares<E> {
    inner: Mutex<Inner<E>>,
    budget_bytes: usize,
}

#[derive(Debug)]
struct Inner<E> {
    stock: Vec<Vec<E>>,
    /// Lengths recently asked of [`Spares::take`], the latest last.
    wanted: Vec<usize>,
}

fn bytes<E>(v: &[Vec<E>]) -> usize {
    v.iter().map(|v| v.capacity() * size_of::<E>()).sum()
}

impl<E> Spares<E> {
    /// A stock that holds at most `budget_bytes` of buffer capacity.
    pub const fn new(budget_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                stock: Vec::new(),
                wanted: Vec::new(),
            }),
            budget_bytes,
        }
    }

    /// The smallest spare with room for `len` elements, if there is one. Its length and contents
    /// are whatever its last user left.
    pub fn take(&self, len: usize) -> Option<Vec<E>> {
        if len.saturating_mul(size_of::<E>()) < MIN_BYTES {
            return None;
        }
        let mut inner = self.inner.lock().ok()?;
        inner.wanted.retain(|&w| w != len);
        if inner.wanted.len() == WANTED {
            inner.wanted.remove(0);
        }
        inner.wanted.push(len);
        let best = inner
            .stock
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)?;
        Some(inner.stock.swap_remove(best))
    }

    /// An empty vector with room for `len` elements: a spare when one fits, else a new one.
    pub fn empty(&self, len: usize) -> Vec<E> {
        match self.take(len) {
            Some(mut v) => {
                v.clear();
                v
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Keeps `v` for a later [`take`](Self::take) when one of the lengths lately asked for fits it
    /// (with at most a quarter to spare) and it fits the budget; the oldest spares make room for it.
    pub fn put(&self, v: Vec<E>) {
        let size = v.capacity().saturating_mul(size_of::<E>());
        if size < MIN_BYTES || size > self.budget_bytes {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let cap = v.capacity();
        if !inner.wanted.iter().any(|&w| cap >= w && cap - w <= w / 4) {
            return;
        }
        while !inner.stock.is_empty() && bytes(&inner.stock) + size > self.budget_bytes {
            // The oldest goes. (Unmapped under the lock: quick next to the work that needs a
            // buffer this size.)
            inner.stock.remove(0);
        }
        inner.stock.push(v);
    }

    /// Bytes of capacity held now.
    pub fn held_bytes(&self) -> usize {
        self.inner.lock().map_or(0, |i| bytes(&i.stock))
    }
}

/// Float tensors. [`crate::Model::run`] returns each input's buffer here after the run and copies
/// outputs from ONNX Runtime into buffers from here; pre-processing takes its next input buffer from
/// here ([`Spares::empty`]), and a caller done with a run's outputs gives them back ([`recycle`]).
pub static FLOATS: Spares<f32> = Spares::new(64 << 20);

/// Returns the float buffers of tensors no longer needed to [`FLOATS`].
pub fn recycle(tensors: impl IntoIterator<Item = crate::Tensor>) {
    for t in tensors {
        if let crate::TensorData::F32(v) = t.data {
            FLOATS.put(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_buffer_comes_back_and_small_ones_are_not_kept() {
        let spares = Spares::<f32>::new(8 << 20);
        // Nothing asked for a buffer this size yet: not kept.
        spares.put(Vec::<f32>::with_capacity(1 << 19));
        assert_eq!(spares.held_bytes(), 0);
        let v = spares.empty(1 << 19); // 2 MiB
        let ptr = v.as_ptr();
        spares.put(v);
        assert_eq!(spares.held_bytes(), 2 << 20);
        // Too large for it: a new buffer, and the spare stays.
        assert!(spares.take(1 << 20).is_none());
        let again = spares.empty(1000 << 9);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
        assert_eq!(spares.held_bytes(), 0);
        // Under 1 MiB: left to the allocator.
        spares.put(Vec::<f32>::with_capacity(1000));
        assert_eq!(spares.held_bytes(), 0);
        assert!(spares.take(10).is_none());
    }

    #[test]
    fn the_budget_holds_and_the_oldest_spare_goes_first() {
        let spares = Spares::<u8>::new(5 << 20);
        let sizes = [2 << 20, 2 << 20, 3 << 20];
        let ptrs: Vec<_> = sizes
            .iter()
            .map(|&n| {
                let v = spares.empty(n);
                let p = v.as_ptr();
                spares.put(v);
                p
            })
            .collect();
        // The first 2 MiB made room for the 3 MiB one: 5 MiB held.
        assert_eq!(spares.held_bytes(), 5 << 20);
        // The smallest that fits: the second 2 MiB, not the 3 MiB.
        assert_eq!(spares.take(1 << 20).map(|v| v.as_ptr()), Some(ptrs[1]));
        assert_eq!(spares.take(1 << 20).map(|v| v.as_ptr()), Some(ptrs[2]));
        assert!(spares.take(1 << 20).is_none());
        // Over the whole budget: not kept.
        spares.put(spares.empty(6 << 20));
        assert_eq!(spares.held_bytes(), 0);
        // Only the last few lengths asked for count: 2 MiB was asked before four others.
        for n in [6 << 20, 7 << 20, 8 << 20, 9 << 20] {
            assert!(spares.take(n).is_none());
        }
        spares.put(Vec::<u8>::with_capacity(2 << 20));
        assert_eq!(spares.held_bytes(), 0);
        // Much larger than any length asked for: not kept either; a quarter more is.
        assert!(spares.take(1 << 20).is_none());
        spares.put(Vec::<u8>::with_capacity(3 << 20));
        assert_eq!(spares.held_bytes(), 0);
        spares.put(Vec::<u8>::with_capacity(5 << 18));
        assert_eq!(spares.held_bytes(), 5 << 18);
    }
}
