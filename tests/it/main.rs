//! Integration tests: the engine against the reference fixtures, bad packages, the CLI, the
//! real all-MiniLM-L6-v2 model, and synthetic packages. One binary, so it links once.

mod auth;
mod bad_packages;
mod bad_requests;
mod browser;
mod cli;
mod common;
mod crash;
mod dtype;
mod faults;
mod fixtures;
mod heads;
mod llama;
mod minilm;
mod openai;
mod openapi;
mod scheduling;
mod server;
mod soak;
mod synth;
mod triton;
mod upgrade;
mod ws;
