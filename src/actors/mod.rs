//! Actors of the runtime (scheduler, one GPU actor per device, one function actor per deployed
//! function) and, in one module, the messages they exchange. Filled in by the runtime work
//! (issue 3); the engine they drive lives in `crate::engine`.
