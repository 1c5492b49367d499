//! Chat prompts: a conversation rendered by its function's chat template (with the generation
//! prompt) and tokenized as it is — the template writes the special tokens its model expects,
//! so the tokenizer adds none. The template was compiled when the model was loaded.

use super::Runtime;
use crate::engine::{ChatMessage, EngineError};
use crate::function::Function;
use crate::request::RuntimeError;

impl Runtime {
    /// The prompt ids of `messages` for `entry`'s model. Blocks (rendering, tokenizing): call it
    /// off the HTTP workers.
    pub fn chat_prompt(&self, entry: &Function, messages: &[ChatMessage]) -> Result<Vec<u32>, RuntimeError> {
        let Some(model) = entry.model() else {
            return Err(EngineError::BadInput("a function deployed from a profile alone cannot generate".into()).into());
        };
        let tokenizer = model.spec.tokenizer.as_ref().ok_or(EngineError::NoTokenizer)?;
        let template =
            model.spec.chat_template.as_ref().ok_or_else(|| RuntimeError::NoChatTemplate(entry.name.to_string()))?;
        let text = template.render(messages, true)?;
        Ok(tokenizer.encode_plain(&text)?)
    }
}
