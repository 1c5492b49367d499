//! Page accounting for one device's weight pool: the pool is reserved once at start-up and
//! split into fixed-size pages; a resident model holds one contiguous run of pages (the CPU
//! engine reads a model as one slice; a CUDA device maps pages into one virtual range).

use std::collections::BTreeMap;

use serde::Serialize;

/// A run of pages: `pages` pages from `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    pub first: usize,
    pub pages: usize,
}

#[derive(Debug, Clone)]
pub struct PagePool {
    page_bytes: u64,
    pages: usize,
    /// Allocated runs by first page.
    used: BTreeMap<usize, usize>,
    /// Sum of `used`'s runs (kept, not recomputed: the scheduler asks on every decision).
    used_pages: usize,
}

impl PagePool {
    /// A pool of `pool_bytes` rounded down to whole pages.
    pub fn new(pool_bytes: u64, page_bytes: u64) -> Self {
        assert!(page_bytes > 0, "page size must be positive");
        Self { page_bytes, pages: (pool_bytes / page_bytes) as usize, used: BTreeMap::new(), used_pages: 0 }
    }

    pub fn page_bytes(&self) -> u64 {
        self.page_bytes
    }

    pub fn total_pages(&self) -> usize {
        self.pages
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.pages as u64 * self.page_bytes
    }

    pub fn used_pages(&self) -> usize {
        self.used_pages
    }

    pub fn free_pages(&self) -> usize {
        self.pages - self.used_pages()
    }

    /// Pages needed to hold `bytes`.
    pub fn pages_for(&self, bytes: u64) -> usize {
        bytes.div_ceil(self.page_bytes) as usize
    }

    /// Whether `bytes` could ever fit (in an empty pool).
    pub fn can_ever_hold(&self, bytes: u64) -> bool {
        self.pages_for(bytes) <= self.pages
    }

    /// The free runs, in page order.
    pub fn free_runs(&self) -> Vec<Extent> {
        let mut runs = Vec::new();
        let mut at = 0;
        for (&first, &pages) in &self.used {
            if first > at {
                runs.push(Extent { first: at, pages: first - at });
            }
            at = first + pages;
        }
        if at < self.pages {
            runs.push(Extent { first: at, pages: self.pages - at });
        }
        runs
    }

    /// Whether a contiguous run of `pages` is free now.
    pub fn can_alloc(&self, pages: usize) -> bool {
        let mut at = 0;
        for (&first, &len) in &self.used {
            if first - at >= pages {
                return true;
            }
            at = first + len;
        }
        self.pages - at >= pages
    }

    /// First-fit allocation of a contiguous run of `pages`.
    pub fn alloc(&mut self, pages: usize) -> Option<Extent> {
        if pages == 0 {
            return None;
        }
        let mut at = 0;
        let mut found = None;
        for (&first, &len) in &self.used {
            if first - at >= pages {
                found = Some(at);
                break;
            }
            at = first + len;
        }
        let first = found.or_else(|| (self.pages - at >= pages).then_some(at))?;
        self.used.insert(first, pages);
        self.used_pages += pages;
        Some(Extent { first, pages })
    }

    /// Returns an extent to the pool. Freeing what is not allocated is a bug in the caller.
    pub fn free(&mut self, extent: Extent) {
        let pages = self.used.remove(&extent.first);
        assert_eq!(pages, Some(extent.pages), "freeing an extent that is not allocated: {extent:?}");
        self.used_pages -= extent.pages;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_pages_exactly() {
        let mut p = PagePool::new(10 * 4096 + 100, 4096);
        assert_eq!(p.total_pages(), 10);
        assert_eq!(p.pages_for(1), 1);
        assert_eq!(p.pages_for(4096), 1);
        assert_eq!(p.pages_for(4097), 2);
        let a = p.alloc(3).unwrap();
        let b = p.alloc(4).unwrap();
        assert_eq!((a.first, b.first), (0, 3));
        assert_eq!(p.free_pages(), 3);
        assert!(p.alloc(4).is_none(), "only 3 pages left");
        p.free(a);
        assert_eq!(p.free_runs(), vec![Extent { first: 0, pages: 3 }, Extent { first: 7, pages: 3 }]);
        assert!(p.alloc(4).is_none(), "6 free pages, but no run of 4");
        p.free(b);
        assert_eq!(p.alloc(10), Some(Extent { first: 0, pages: 10 }));
        assert!(p.can_ever_hold(10 * 4096) && !p.can_ever_hold(10 * 4096 + 1));
    }

    #[test]
    #[should_panic(expected = "not allocated")]
    fn double_free_is_caught() {
        let mut p = PagePool::new(4096 * 4, 4096);
        let a = p.alloc(2).unwrap();
        p.free(a);
        p.free(a);
    }
}
