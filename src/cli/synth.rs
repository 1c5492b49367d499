//! `faaswap synth`: synthetic packages with a progress bar on stderr.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::{print_json, CliError};
use crate::engine::synth::{self, SynthDtype};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Preset name; `--list` shows them.
    #[arg(long, required_unless_present = "list")]
    pub preset: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder to write (created if missing).
    #[arg(long, required_unless_present = "list")]
    pub out: Option<PathBuf>,
    /// How the package stores its matrices (default: the preset's `dtype`, BF16 for the Llama
    /// family as published, else F32).
    #[arg(long, value_enum)]
    pub dtype: Option<SynthDtype>,
    /// List the presets and exit.
    #[arg(long)]
    pub list: bool,
}

pub fn run(a: SynthArgs) -> Result<(), CliError> {
    if a.list {
        // What each preset takes in host memory, pool pages and one swap-in, per dtype.
        let weight_bytes = |p: &synth::Preset| -> Result<serde_json::Value, CliError> {
            let config = (p.config)();
            let mut bytes = serde_json::Map::new();
            for d in crate::engine::Dtype::ALL {
                let (_, loaded) = crate::engine::registry::load_as(std::path::Path::new("config.json"), &config, d)?;
                bytes.insert(d.name().to_string(), loaded.layout.total_bytes().into());
            }
            Ok(bytes.into())
        };
        let list = crate::engine::registry::presets()
            .map(|p| {
                Ok(serde_json::json!({"name": p.name, "description": p.description, "weight_bytes": weight_bytes(p)?}))
            })
            .collect::<Result<Vec<_>, CliError>>()?;
        return print_json(&list);
    }
    let (Some(name), Some(out)) = (a.preset, a.out) else {
        return Err(CliError::Usage("--preset and --out are required".into()));
    };
    let preset = synth::preset(&name).ok_or_else(|| {
        let names: Vec<_> = crate::engine::registry::presets().map(|p| p.name).collect();
        CliError::Usage(format!("unknown preset {name:?} (known: {})", names.join(", ")))
    })?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("writing {name}"));
    let dtype = a.dtype.unwrap_or_else(|| match (preset.config)()["dtype"].as_str() {
        Some("bfloat16") => SynthDtype::Bf16,
        Some("float16") => SynthDtype::F16,
        _ => SynthDtype::F32,
    });
    let report = synth::write_package(preset, a.seed, dtype, &out, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    print_json(&report)
}
