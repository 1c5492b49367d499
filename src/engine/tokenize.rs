//! Text to token ids through the `tokenizers` crate, truncating as sentence-transformers does.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationParams};

use super::error::{EngineError, Result};
use super::files::{read_optional_json, read_small_file};

/// `tokenizer.json` files of real models are a few MiB; refuse absurd ones.
const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

/// Bytes of text kept per token the tokenizer may return: a text is cut to `max_len` times this
/// (at a character boundary) before it is tokenized, since tokenizing costs time and hundreds
/// of bytes of memory per byte of text whatever the truncation. A token is a few bytes of text;
/// only pathological text (long runs of whitespace, words of more than 100 characters, which
/// WordPiece reads as one unknown token) has fewer than `max_len` tokens in the bytes kept and
/// would have had more in the bytes cut.
pub const TEXT_BYTES_PER_TOKEN: usize = 64;

pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_len: usize,
    path: PathBuf,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder").field("path", &self.path).field("max_len", &self.max_len).finish()
    }
}

impl TextEncoder {
    /// Loads `dir/tokenizer.json` if present. Sequences are cut to `max_seq_length` from
    /// `sentence_bert_config.json` when the package has one, else to `max_positions` — never
    /// to the truncation or padding written in `tokenizer.json`, which the sentence pipeline
    /// overrides.
    pub fn load(dir: &Path, max_positions: usize) -> Result<Option<Self>> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Ok(None);
        }
        let bytes = read_small_file(&path, MAX_TOKENIZER_BYTES)?;
        let bad = |reason: String| EngineError::BadTokenizer { path: path.clone(), reason };
        let mut tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        let st_path = dir.join("sentence_bert_config.json");
        let max_len = match read_optional_json(&st_path, 1 << 20)? {
            Some(v) => match v.get("max_seq_length").and_then(|x| x.as_u64()) {
                Some(n) if n > 0 => (n as usize).min(max_positions),
                _ => {
                    return Err(EngineError::config(&st_path, "max_seq_length must be a positive integer"));
                }
            },
            None => max_positions,
        };
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_len, ..TruncationParams::default() }))
            .map_err(|e| bad(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(Some(Self { tokenizer, max_len, path }))
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Most bytes of a text that are tokenized (`TEXT_BYTES_PER_TOKEN`).
    pub fn max_text_bytes(&self) -> usize {
        self.max_len.saturating_mul(TEXT_BYTES_PER_TOKEN)
    }

    /// Token ids of each text, with the special tokens the tokenizer's post-processor adds.
    /// Each text is cut to `max_text_bytes` first; texts are tokenized one at a time, so the
    /// tokenizer's memory is one text's.
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                self.tokenizer
                    .encode(self.cut(t), true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| EngineError::BadInput(format!("cannot tokenize text: {e}")))
            })
            .collect()
    }

    /// Token ids and token types of each pair `(texts[i], pairs[i])` through the tokenizer's
    /// pair template; the pair is truncated to `max_len` together, longest text first.
    pub fn encode_pairs(&self, texts: &[String], pairs: &[String]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        if texts.len() != pairs.len() {
            return Err(EngineError::BadInput(format!(
                "{} texts and {} text_pair values: give one text_pair per text",
                texts.len(),
                pairs.len()
            )));
        }
        texts
            .iter()
            .zip(pairs)
            .map(|(a, b)| {
                self.tokenizer
                    .encode((self.cut(a), self.cut(b)), true)
                    .map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec()))
                    .map_err(|e| EngineError::BadInput(format!("cannot tokenize text pair: {e}")))
            })
            .collect()
    }

    /// Token ids of one text as it is, without the special tokens the post-processor adds (a
    /// rendered chat prompt writes its own). A text over `max_text_bytes` is refused, not cut:
    /// a prompt with its end cut off would be answered as if it were whole.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        if text.len() > self.max_text_bytes() {
            return Err(EngineError::BadInput(format!(
                "a text of {} bytes is longer than the model's {} positions can hold",
                text.len(),
                self.max_len
            )));
        }
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| EngineError::BadInput(format!("cannot tokenize text: {e}")))
    }

    /// `text` cut to `max_text_bytes` at a character boundary.
    fn cut<'t>(&self, text: &'t str) -> &'t str {
        let mut end = text.len().min(self.max_text_bytes());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[..end]
    }

    /// Text of `ids`, special tokens skipped (for streaming generated tokens).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| EngineError::BadInput(format!("cannot decode tokens: {e}")))
    }
}
