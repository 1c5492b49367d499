//! The model repository (`--model-repository`): package folders a function is deployed from,
//! and from which a package copy that changed on disk is re-imported.

use std::path::{Path, PathBuf};

use super::DeployError;
use crate::request::ModelName;

#[derive(Debug, Clone, Default)]
pub struct Repository {
    root: Option<PathBuf>,
}

impl Repository {
    pub fn new(root: Option<PathBuf>) -> Self {
        Self { root }
    }

    /// Package folders in the repository (those with a valid name and a `config.json`).
    pub fn models(&self) -> Vec<String> {
        let Some(root) = &self.root else {
            return Vec::new();
        };
        let mut names: Vec<String> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("config.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| ModelName::parse(n).is_ok())
            .collect();
        names.sort();
        names
    }

    /// The folder of package `model`, refused when it leads out of the repository.
    pub fn path(&self, model: &ModelName) -> Result<PathBuf, DeployError> {
        let repo = self.root.as_ref().ok_or(DeployError::NoRepository)?;
        let dir = repo.join(model.as_str());
        if !dir.join("config.json").is_file() {
            return Err(DeployError::ModelNotFound(model.to_string()));
        }
        // A package folder that is a symlink (or holds one) leading out of the repository
        // would let a request read any file of the host.
        let inside = |p: &Path| match (p.canonicalize(), repo.canonicalize()) {
            (Ok(p), Ok(r)) => p.starts_with(&r),
            _ => false,
        };
        if !inside(&dir) {
            return Err(DeployError::OutsideRepository(model.to_string()));
        }
        for file in crate::store::package_files(&dir) {
            let f = dir.join(&file);
            if f.symlink_metadata().is_ok() && !inside(&f) {
                return Err(DeployError::OutsideRepository(format!("{model}/{file}")));
            }
        }
        Ok(dir)
    }
}
