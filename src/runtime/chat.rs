//! Chat prompts: a conversation rendered by its function's chat template (with the generation
//! prompt) and tokenized as it is — the template writes the special tokens its model expects,
//! so the tokenizer adds none. Each model's template is loaded once, on its first chat, and kept
//! while that model is the function's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::Runtime;
use crate::engine::{ChatMessage, ChatTemplate, EngineError, Model};
use crate::function::Function;
use crate::request::RuntimeError;

/// Loaded templates by function name.
#[derive(Default)]
pub(super) struct ChatTemplates(Mutex<HashMap<String, Loaded>>);

/// A model's template (or that it has none), with the model it was loaded for: a redeploy under
/// the same name brings a new model, and its own template.
struct Loaded {
    model: Weak<Model>,
    template: Option<Arc<ChatTemplate>>,
}

impl ChatTemplates {
    /// The template of `function`'s `model`; loaded from its package (blocking) if not yet.
    fn get(&self, function: &str, model: &Arc<Model>) -> Result<Option<Arc<ChatTemplate>>, EngineError> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(loaded) = map.get(function).filter(|l| std::ptr::eq(l.model.as_ptr(), Arc::as_ptr(model))) {
            return Ok(loaded.template.clone());
        }
        drop(map);
        // Loaded without the lock: reading a package takes a while. Two first chats may both
        // load it; either result is the same.
        let template = ChatTemplate::load(&model.spec.dir)?.map(Arc::new);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, l| l.model.strong_count() > 0);
        map.insert(function.to_string(), Loaded { model: Arc::downgrade(model), template: template.clone() });
        Ok(template)
    }
}

impl Runtime {
    /// The prompt ids of `messages` for `entry`'s model. Blocks (loading a template, rendering,
    /// tokenizing): call it off the HTTP workers.
    pub fn chat_prompt(&self, entry: &Function, messages: &[ChatMessage]) -> Result<Vec<u32>, RuntimeError> {
        let Some(model) = entry.model() else {
            return Err(EngineError::BadInput("a function deployed from a profile alone cannot generate".into()).into());
        };
        let tokenizer = model.spec.tokenizer.as_ref().ok_or(EngineError::NoTokenizer)?;
        let template = self
            .chat_templates
            .get(entry.name.as_str(), model)?
            .ok_or_else(|| RuntimeError::NoChatTemplate(entry.name.to_string()))?;
        let text = template.render(messages, true)?;
        Ok(tokenizer.encode_plain(&text)?)
    }
}
