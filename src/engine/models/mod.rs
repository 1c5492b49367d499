//! The model families, one file each: its config, its weight plan, its forward pass as a
//! device program (and a decoder's step), its synthetic presets, and its row of `registry`.

pub mod bert;
pub mod distilbert;
pub mod encoder;
pub mod gpt2;
pub mod llama;
pub mod roberta;
