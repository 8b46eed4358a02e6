//! The broker's global allocator: the system allocator, except that a single allocation of
//! 1 GiB or more is a lazily committed mapping (MAP_NORESERVE).
//!
//! Why: the Kafka request decoder (kafka-protocol 0.18) sizes a `Vec` from an array length
//! read off the wire before decoding one element, so a 14-byte Metadata request claiming
//! 2^28 topics asks for tens of GiB up front. The system allocator refuses that and the
//! process aborts — one packet would take the broker down (found by `fuzz/` target
//! `request`; upstream: kafka-protocol-rs PRs #152, #161, #200, unreleased). A reserved
//! mapping costs address space only: the decoder fails on the missing bytes after touching
//! a page or two, and the mapping is unmapped. No legitimate allocation of the broker comes
//! near 1 GiB (requests are capped by max_request_bytes), so nothing else takes this path.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are reserved mappings.
const HUGE_BYTES: usize = 1 << 30;
/// What an anonymous mapping is aligned to.
const PAGE_BYTES: usize = 4096;

pub struct BrokerAllocator;

fn huge(l: &Layout) -> bool {
    l.size() >= HUGE_BYTES && l.align() <= PAGE_BYTES
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

// SAFETY: every block is freed by the path that allocated it, chosen by the same layout test.
unsafe impl GlobalAlloc for BrokerAllocator {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if huge(&l) {
            unsafe { map(l.size()) }
        } else {
            unsafe { System.alloc(l) }
        }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if huge(&l) {
            unsafe { map(l.size()) } // anonymous mappings read as zeroes
        } else {
            unsafe { System.alloc_zeroed(l) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if huge(&l) {
            // SAFETY: p was mapped with exactly this size by `map`.
            unsafe { libc::munmap(p as *mut libc::c_void, l.size()) };
        } else {
            unsafe { System.dealloc(p, l) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a valid layout for new_size with l's alignment.
        let new_l = unsafe { Layout::from_size_align_unchecked(new_size, l.align()) };
        if !huge(&l) && !huge(&new_l) {
            return unsafe { System.realloc(p, l, new_size) };
        }
        let n = unsafe { self.alloc(new_l) };
        if !n.is_null() {
            // SAFETY: both blocks are live and at least this long; they do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(p, n, l.size().min(new_size));
                self.dealloc(p, l);
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_blocks_are_reserved_not_committed() {
        let a = BrokerAllocator;
        unsafe {
            // 64 GiB: more than this machine has; the system allocator would refuse it.
            let l = Layout::from_size_align(64usize << 30, 8).unwrap();
            let p = a.alloc(l);
            assert!(!p.is_null());
            *p = 7;
            *p.add((64usize << 30) - 1) = 9;
            assert_eq!((*p, *p.add((64usize << 30) - 1)), (7, 9));
            let q = a.realloc(p, l, 16);
            assert_eq!(*q, 7);
            a.dealloc(q, Layout::from_size_align(16, 8).unwrap());
            let small = Layout::from_size_align(100, 8).unwrap();
            let s = a.alloc_zeroed(small);
            assert_eq!(*s.add(99), 0);
            a.dealloc(s, small);
        }
    }
}
