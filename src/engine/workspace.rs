//! Activation memory. A `Workspace` is reserved once (per device, at start-up) and every program
//! lays its activations out in it (`nn::Regions`), so the request path allocates no activation
//! buffers. A program that needs more than the workspace holds is refused with
//! `WorkspaceTooSmall` (`program::exec::run`), not served by allocating more.

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

    /// The whole workspace, for a program.
    pub fn elems(&mut self) -> &mut [f32] {
        &mut self.buf
    }
}
