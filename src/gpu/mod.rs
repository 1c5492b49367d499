//! The device abstraction and its back ends (`cpu`, `sim`, `cuda`). Filled in by the runtime
//! work (issue 3) and the CUDA work (issue 4); CPU execution itself is `crate::engine`.
