//! Actors of the runtime, thin shells around plain decisions: the scheduler actor (with the
//! scheduler's handle, through which the per-request events are applied on the thread where
//! they happen), one GPU actor per device on its own thread, and one function actor per
//! deployed function. Every message is in `messages`, grouped by the actor that receives it.

pub mod function;
pub mod gpu;
pub mod messages;
pub mod scheduler;
