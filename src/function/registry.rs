//! Every function the runtime knows by name: the served ones (their latest snapshot) and the
//! persisted ones it does not serve (`Unavailable`, with why). Names are claimed here.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::{DeployError, Function};
use crate::metrics as m;
use crate::request::name::RESERVED;

/// A persisted function the runtime does not serve, and why. Its name stays taken and its
/// package copy stays until an operator deletes it (`DELETE /api/v1/functions/{name}`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unavailable {
    pub name: String,
    /// `unreadable_record`, `record_lost`, `package_changed` or `restore_failed`.
    pub kind: &'static str,
    pub reason: String,
}

#[derive(Default)]
pub struct Registry {
    functions: RwLock<BTreeMap<String, Arc<Function>>>,
    unavailable: RwLock<BTreeMap<String, Unavailable>>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<Function>> {
        self.functions.read().ok()?.get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Function>> {
        self.functions.read().map(|f| f.values().cloned().collect()).unwrap_or_default()
    }

    /// Makes `function` the one requests for its name get (new, or a new snapshot).
    pub fn publish(&self, function: Arc<Function>) {
        let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
        functions.insert(function.name.to_string(), function);
        m::functions_deployed(functions.len());
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Function>> {
        let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
        let function = functions.remove(name);
        m::functions_deployed(functions.len());
        function
    }

    /// A persisted function that is not served, if `name` is one.
    pub fn unavailable(&self, name: &str) -> Option<Unavailable> {
        self.unavailable.read().ok()?.get(name).cloned()
    }

    pub fn unavailable_all(&self) -> Vec<Unavailable> {
        self.unavailable.read().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Records that `name` is persisted but not served (the first reason found stays).
    pub fn set_unavailable(&self, name: &str, kind: &'static str, reason: String) {
        let mut map = self.unavailable.write().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string()).or_insert(Unavailable { name: name.to_string(), kind, reason });
        Self::count_unavailable(&map);
    }

    pub fn forget_unavailable(&self, name: &str) {
        let mut map = self.unavailable.write().unwrap_or_else(|e| e.into_inner());
        map.remove(name);
        Self::count_unavailable(&map);
    }

    fn count_unavailable(map: &BTreeMap<String, Unavailable>) {
        let unreadable = map.values().filter(|u| u.kind == "unreadable_record").count();
        m::functions_unavailable(map.len(), unreadable);
    }

    /// Refuses a name that is reserved, or taken by a deployed function or an unavailable one.
    pub fn check_free(&self, name: &str) -> Result<(), DeployError> {
        if RESERVED.contains(&name) {
            return Err(crate::request::NameError::Reserved(name.to_string()).into());
        }
        if self.get(name).is_some() {
            return Err(DeployError::AlreadyExists(name.to_string()));
        }
        match self.unavailable(name) {
            Some(u) => Err(DeployError::Unavailable { name: name.to_string(), reason: u.reason }),
            None => Ok(()),
        }
    }
}
