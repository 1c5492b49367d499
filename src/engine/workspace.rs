//! Activation memory. A `Workspace` is reserved once (per device, at start-up) and every
//! request carves its activations out of it through an `Arena`, so the request path allocates
//! no activation buffers. A request that needs more than the workspace holds is refused with
//! `WorkspaceTooSmall`, not served by allocating more.

use super::error::{EngineError, Result};

pub struct Workspace {
    buf: Vec<f32>,
}

impl Workspace {
    /// Reserves `elems` floats. The pages are committed as the first requests touch them.
    pub fn new(elems: usize) -> Self {
        Self { buf: vec![0.0; elems] }
    }

    pub fn with_bytes(bytes: u64) -> Self {
        Self::new((bytes / 4) as usize)
    }

    pub fn arena(&mut self) -> Arena<'_> {
        let capacity = self.buf.len();
        Arena { rest: &mut self.buf, capacity, used: 0 }
    }
}

/// Hands out disjoint slices of a workspace, front to back.
pub struct Arena<'a> {
    rest: &'a mut [f32],
    capacity: usize,
    used: usize,
}

impl<'a> Arena<'a> {
    /// `n` floats, zeroed.
    pub fn take(&mut self, n: usize) -> Result<&'a mut [f32]> {
        if n > self.rest.len() {
            return Err(EngineError::WorkspaceTooSmall {
                needed: (self.used + n) as u64 * 4,
                available: self.capacity as u64 * 4,
            });
        }
        let rest = std::mem::take(&mut self.rest);
        let (head, tail) = rest.split_at_mut(n);
        self.rest = tail;
        self.used += n;
        head.fill(0.0);
        Ok(head)
    }

    /// Runs `f` with an arena over what is left; what `f` takes is free again afterwards (one
    /// generation step's activations, while the KV cache taken before stays).
    pub fn scoped<R>(&mut self, f: impl FnOnce(&mut Arena<'_>) -> R) -> R {
        let mut inner = Arena { rest: &mut *self.rest, capacity: self.capacity, used: self.used };
        f(&mut inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_disjoint_zeroed_slices_and_refuses_overflow() {
        let mut ws = Workspace::new(10);
        let mut arena = ws.arena();
        let a = arena.take(4).unwrap();
        a.fill(7.0);
        let b = arena.scoped(|inner| {
            let t = inner.take(6).unwrap();
            t.fill(1.0);
            assert!(inner.take(1).is_err());
            t.len()
        });
        assert_eq!(b, 6);
        let c = arena.take(6).unwrap();
        assert!(c.iter().all(|&x| x == 0.0), "taken again after the scope: zeroed");
        assert_eq!(a, &[7.0; 4]);
        let err = arena.take(1).unwrap_err();
        assert!(matches!(err, EngineError::WorkspaceTooSmall { needed: 44, available: 40 }), "{err}");
    }
}
