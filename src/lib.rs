//! faaswap: a serverless GPU inference runtime that keeps every function's model in host memory
//! and swaps it onto a device when a request arrives. See `ARCHITECTURE.md` for the map.

pub mod actors;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod engine;
pub mod events;
pub mod function;
pub mod gpu;
pub mod metrics;
pub mod policy;
pub mod request;
pub mod runtime;
pub mod server;
pub mod simulator;
pub mod store;
pub mod unsent;
