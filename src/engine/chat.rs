//! Chat templates: a package's Jinja template that turns a conversation into the prompt text its
//! model was trained on, rendered as transformers' `apply_chat_template` renders it.
//!
//! Hugging Face templates are written for Python's Jinja2 in transformers' sandbox; this module
//! gives MiniJinja that dialect: the same whitespace settings (`trim_blocks`, `lstrip_blocks`, no
//! kept trailing newline, no auto-escaping), Python's string and dict methods (`pycompat`),
//! transformers' globals (`raise_exception`, `strftime_now`), its `tojson` (Python's `json.dumps`
//! spacing), loop controls, and its `{% generation %}` tag. A template is code from the package
//! and messages come from clients, so every render runs on a fuel budget (which bounds both time
//! and memory) and its output is capped.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Deserializer, Serialize};

use super::error::{EngineError, Result};
use super::files::{read_optional_json, read_small_file};

const TEMPLATE_NAME: &str = "chat_template";
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;
/// Larger than the template's limit: some tokenizer configs list thousands of added tokens.
const MAX_TOKENIZER_CONFIG_BYTES: u64 = 16 << 20;
/// Far above any prompt a model's context can hold; reached only by a runaway template.
const MAX_RENDERED_BYTES: usize = 4 << 20;
/// Per render: about this many instructions, or 64 times as many bytes created (MiniJinja's
/// accounting), about 64 MiB — room for several passes over a prompt at the output limit.
const FUEL: u64 = 1_000_000;
/// Renders run on a thread with this much (lazily committed) stack, because MiniJinja drops,
/// prints, compares and sorts nested values by recursion: a template can nest a list in itself
/// about 95,000 times on its fuel (`set ns.v = [ns.v]`); measured on MiniJinja 3.1, printing
/// 100,000 levels takes 32–64 MiB of stack — and a stack overflow aborts the whole process.
const RENDER_STACK_BYTES: usize = 256 << 20;
/// Deeper values than this in `tojson` are refused rather than risking the stack.
const MAX_JSON_DEPTH: usize = 500;
/// transformers' `SPECIAL_TOKENS_ATTRIBUTES`: what `special_tokens_map` passes to the template.
const SPECIAL_TOKENS: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// One message of a conversation. `content` is text; `null` or a missing `content` (OpenAI's
/// shape for an assistant turn that only calls tools) reads as empty. transformers would drop the
/// key instead, and ChatML-style templates then fail on it; an empty turn is the useful reading.
/// Content given as a list of parts would become an untagged enum here: the template sees the
/// message through serde, so it would see the list as transformers passes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Why a conversation could not be rendered. All of them are the request's (or the template's
/// refusal of it), not the server's.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The template refused the conversation (`raise_exception`); its message, verbatim.
    #[error("{0}")]
    Template(String),
    /// Rendering failed: an undefined value used, a type error, fuel or recursion exhausted.
    #[error("chat template failed: {0}")]
    Render(String),
    #[error("the rendered chat prompt is over the limit of {limit} bytes")]
    TooLarge { limit: usize },
}

/// A package's chat template, compiled, with the special tokens it is rendered with.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// (name, text) for each special token the tokenizer config defines.
    special_tokens: Vec<(&'static str, String)>,
}

impl ChatTemplate {
    /// Loads `dir/chat_template.jinja` (transformers 5), else the `chat_template` of
    /// `dir/tokenizer_config.json`: a string, or a list of `{name, template}` (the one named
    /// `default`, else the first). `Ok(None)` when the package has no template.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let jinja_path = dir.join("chat_template.jinja");
        let config_path = dir.join("tokenizer_config.json");
        let config = read_optional_json(&config_path, MAX_TOKENIZER_CONFIG_BYTES)?;
        let (source, source_path) = if jinja_path.exists() {
            let bytes = read_small_file(&jinja_path, MAX_TEMPLATE_BYTES)?;
            let source = String::from_utf8(bytes).map_err(|_| EngineError::config(&jinja_path, "not UTF-8"))?;
            (source, jinja_path)
        } else {
            match config.as_ref().and_then(|c| c.get("chat_template")) {
                None | Some(serde_json::Value::Null) => return Ok(None),
                Some(v) => {
                    (template_in_config(v).map_err(|r| EngineError::config(&config_path, r))?, config_path.clone())
                }
            }
        };
        let mut special_tokens = special_tokens_in(config.as_ref());
        if config.as_ref().is_none_or(|c| c.get("added_tokens_decoder").is_none()) {
            // As transformers does for older packages: special_tokens_map.json overrides.
            let map = read_optional_json(&dir.join("special_tokens_map.json"), MAX_TOKENIZER_CONFIG_BYTES)?;
            for (name, text) in special_tokens_in(map.as_ref()) {
                special_tokens.retain(|(n, _)| *n != name);
                special_tokens.push((name, text));
            }
        }
        Self::compile(source, &source_path, special_tokens).map(Some)
    }

    fn compile(source: String, path: &Path, special_tokens: Vec<(&'static str, String)>) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).keep_trailing_newline(false).build();
        env.set_syntax(syntax.expect("the default delimiters are valid"));
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // Jinja2 prints Python's reprs: `None`, `True`, `False`.
        env.set_formatter(|out, state, value| match value.kind() {
            ValueKind::None => Ok(out.write_str("None")?),
            ValueKind::Bool => Ok(out.write_str(if value.is_true() { "True" } else { "False" })?),
            _ => minijinja::escape_formatter(out, state, value),
        });
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        let source = strip_generation_tags(&source).into_owned();
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| EngineError::config(path, format!("chat template does not compile: {e}")))?;
        Ok(Self { env, special_tokens })
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.special_token("bos_token")
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.special_token("eos_token")
    }

    fn special_token(&self, name: &str) -> Option<&str> {
        self.special_tokens.iter().find(|(n, _)| *n == name).map(|(_, t)| t.as_str())
    }

    /// Renders a conversation as `apply_chat_template(messages, add_generation_prompt=...)` does
    /// (without tokenizing). The template sees `messages`, `add_generation_prompt`, `tools` and
    /// `documents` (both None, as transformers passes them) and the special tokens.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ChatError> {
        std::thread::scope(|scope| {
            let render = std::thread::Builder::new()
                .name("chat-template".into())
                .stack_size(RENDER_STACK_BYTES)
                .spawn_scoped(scope, || self.render_here(messages, add_generation_prompt))
                .map_err(|e| ChatError::Render(format!("cannot start the render thread: {e}")))?;
            render.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn render_here(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ChatError> {
        let mut ctx = vec![
            ("messages", Value::from(Serde(messages))),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ];
        ctx.extend(self.special_tokens.iter().map(|(name, text)| (*name, Value::from(text.as_str()))));
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| ChatError::Render(e.to_string()))?;
        let mut out = CappedOutput { bytes: Vec::new(), overflowed: false };
        match template.render_captured_to(Value::from_pairs(ctx), &mut out) {
            Ok(_) => String::from_utf8(out.bytes).map_err(|e| ChatError::Render(e.to_string())),
            Err(_) if out.overflowed => Err(ChatError::TooLarge { limit: MAX_RENDERED_BYTES }),
            Err(e) => Err(raised_message(&e).map_or_else(|| ChatError::Render(e.to_string()), ChatError::Template)),
        }
    }
}

/// The template text of a tokenizer config's `chat_template` value.
fn template_in_config(value: &serde_json::Value) -> std::result::Result<String, String> {
    let template = match value {
        serde_json::Value::String(s) => Some(s.as_str()),
        serde_json::Value::Array(list) => {
            let named = |name: &str| list.iter().find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name));
            named("default").or(list.first()).and_then(|t| t.get("template")).and_then(|t| t.as_str())
        }
        _ => None,
    };
    let template = template.ok_or("chat_template must be a string or a list of {name, template} objects")?;
    if template.len() as u64 > MAX_TEMPLATE_BYTES {
        return Err(format!("chat_template is {} bytes, more than the limit of {MAX_TEMPLATE_BYTES}", template.len()));
    }
    Ok(template.to_owned())
}

/// The special tokens a tokenizer config (or special tokens map) defines: each a string or an
/// AddedToken object (`{"content": ...}`); null or anything else leaves the token undefined.
fn special_tokens_in(config: Option<&serde_json::Value>) -> Vec<(&'static str, String)> {
    let Some(config) = config else { return Vec::new() };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_owned),
        _ => None,
    };
    SPECIAL_TOKENS.iter().filter_map(|&name| Some((name, text(config.get(name)?)?))).collect()
}

/// transformers' `{% generation %}...{% endgeneration %}` marks assistant text for training
/// masks and renders its body unchanged; MiniJinja has no custom tags, so it becomes
/// `{% if true %}...{% endif %}`, keeping the tags' whitespace control.
fn strip_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            rest = tag; // unterminated: left for the parser to report
            break;
        };
        let inner = &tag[2..end];
        let (pre, body) = split_marker(inner, true);
        let (post, word) = split_marker(body, false);
        let replacement = match word.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => write!(out, "{{%{pre} {r} {post}%}}").expect("writing to a String"),
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Splits a tag's leading (or trailing) whitespace-control marker (`-` or `+`) off its body.
fn split_marker(s: &str, leading: bool) -> (&str, &str) {
    let has = |c: char| c == '-' || c == '+';
    match leading {
        true if s.starts_with(has) => (&s[..1], &s[1..]),
        false if s.ends_with(has) => (&s[s.len() - 1..], &s[..s.len() - 1]),
        _ => ("", s),
    }
}

/// Collects the output, refusing writes past `MAX_RENDERED_BYTES` (which aborts the render).
struct CappedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered chat prompt too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The message a template's `raise_exception` call carries, found as the error's source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Raised(String);

fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(Raised(message)))
}

fn raised_message(error: &Error) -> Option<String> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(Raised(message)) = e.downcast_ref::<Raised>() {
            return Some(message.clone());
        }
        source = e.source();
    }
    None
}

/// `datetime.now().strftime(format)`: local time, naive (so `%z` and `%Z` are refused).
fn strftime_now(format: &str) -> std::result::Result<String, Error> {
    let now = jiff::ZonedDateTime::now().datetime();
    jiff::fmt::strtime::format(format, now)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("strftime_now({format:?}): {e}")))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`; the first two may also be positional (MiniJinja's filters take at most five
/// arguments). Unlike Jinja's own filter it does not escape HTML, and its default separators are
/// `", "` and `": "` (`","` once indented).
fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<String, Error> {
    let arg = |given: Option<Value>, name: &str| -> std::result::Result<Option<Value>, Error> {
        Ok(kwargs.get::<Option<Value>>(name)?.or(given).filter(|v| !v.is_none()))
    };
    let ensure_ascii = arg(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match arg(indent, "indent")? {
        None => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
        Some(v) => Some(" ".repeat(i64::try_from(v)?.max(0) as usize)),
    };
    let (item_sep, key_sep) = match arg(None, "separators")? {
        Some(v) => {
            let parts: Vec<String> = v.try_iter()?.map(|p| p.to_string()).collect();
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => (item, key),
                Err(_) => return Err(Error::new(ErrorKind::InvalidOperation, "separators must be a pair")),
            }
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let sort_keys = arg(None, "sort_keys")?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let mut json = Json { ensure_ascii, indent, item_sep, key_sep, sort_keys, out: String::new() };
    json.value(value, 0)?;
    Ok(json.out)
}

/// A writer with `json.dumps`'s options.
struct Json {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    out: String,
}

impl Json {
    fn value(&mut self, v: &Value, depth: usize) -> std::result::Result<(), Error> {
        if depth > MAX_JSON_DEPTH {
            return Err(Error::new(ErrorKind::InvalidOperation, "tojson: value nested too deeply"));
        }
        match v.kind() {
            ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self.out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => self.out.push_str(&python_number(v)?),
            ValueKind::String => self.string(v.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.container(('[', ']'), &items, depth, |json, item| json.value(item, depth + 1))?;
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in v.try_iter()? {
                    entries.push((json_key(&key)?, v.get_item(&key)?));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container(('{', '}'), &entries, depth, |json, (key, value)| {
                    json.string(key);
                    json.out.push_str(&json.key_sep.clone());
                    json.value(value, depth + 1)
                })?;
            }
            kind => {
                return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: {kind} is not JSON serializable")))
            }
        }
        Ok(())
    }

    /// Python's layout: items joined by the item separator, and with an indent each on its own
    /// line, the closing bracket on a line at the outer level; empty containers stay `[]`/`{}`.
    fn container<T>(
        &mut self,
        (open, close): (char, char),
        items: &[T],
        depth: usize,
        mut write_item: impl FnMut(&mut Self, &T) -> std::result::Result<(), Error>,
    ) -> std::result::Result<(), Error> {
        self.out.push(open);
        let newline = |indent: &str, level: usize| format!("\n{}", indent.repeat(level));
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push_str(&self.item_sep.clone());
            }
            if let Some(indent) = &self.indent {
                self.out.push_str(&newline(indent, depth + 1));
            }
            write_item(self, item)?;
        }
        if let (Some(indent), false) = (&self.indent, items.is_empty()) {
            self.out.push_str(&newline(indent, depth));
        }
        self.out.push(close);
        Ok(())
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if c < ' ' || (self.ensure_ascii && !(' '..='~').contains(&c)) => {
                    for unit in c.encode_utf16(&mut [0; 2]) {
                        write!(self.out, "\\u{unit:04x}").expect("writing to a String");
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers, booleans and None as text.
fn json_key(key: &Value) -> std::result::Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number => python_number(key),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::None => Ok("null".to_owned()),
        kind => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
        )),
    }
}

/// Python's `repr` of a number: integers as digits; floats in the shortest form that reads back,
/// with `.0` on whole numbers and exponents written `e+16`, `e-05` (Rust's `Debug` picks the same
/// digits and switches to exponents at the same magnitudes, but writes `e16`, `e-5`).
fn python_number(v: &Value) -> std::result::Result<String, Error> {
    if v.is_integer() {
        return Ok(v.to_string());
    }
    let f = f64::try_from(v.clone())?;
    Ok(match f {
        f if f.is_nan() => "NaN".to_owned(),
        f if f.is_infinite() => if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned(),
        f => {
            let s = format!("{f:?}");
            match s.split_once('e') {
                Some((mantissa, exp)) => {
                    let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
                    format!("{mantissa}e{sign}{digits:0>2}")
                }
                None => s,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixture;

    const DECODERS: [&str; 4] = ["tiny_llama", "tiny_qwen2", "tiny_qwen3", "tiny_mistral"];

    fn messages(v: &serde_json::Value) -> Vec<ChatMessage> {
        serde_json::from_value(v.clone()).unwrap()
    }

    /// A package directory holding only a tokenizer config and, if given, a template file.
    fn package(config: serde_json::Value, jinja: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
        if let Some(jinja) = jinja {
            std::fs::write(dir.path().join("chat_template.jinja"), jinja).unwrap();
        }
        dir
    }

    fn from_source(template: &str) -> ChatTemplate {
        let dir = package(serde_json::json!({"bos_token": "<s>", "eos_token": {"content": "</s>"}}), Some(template));
        ChatTemplate::load(dir.path()).unwrap().unwrap()
    }

    fn read_json(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn renders_the_fixture_conversations_exactly() {
        for name in DECODERS {
            let dir = fixture(name);
            let reference = read_json(&dir.join("reference.json"));
            let template = ChatTemplate::load(&dir).unwrap().expect("fixture has a chat template");
            assert_eq!(template.bos_token(), Some("<|endoftext|>"), "{name}");
            assert_eq!(template.eos_token(), Some("<|im_end|>"), "{name}");
            let chats = reference["chat"].as_array().unwrap();
            assert!(!chats.is_empty(), "{name}");
            for case in chats {
                let add_generation_prompt = case["add_generation_prompt"].as_bool().unwrap_or(true);
                let rendered = template.render(&messages(&case["messages"]), add_generation_prompt).unwrap();
                assert_eq!(rendered, case["rendered"].as_str().unwrap(), "{name}");
            }
            let refused = &reference["chat_template_error"];
            for case in refused.as_array().cloned().unwrap_or_else(|| vec![refused.clone()]) {
                let fragment = case["error_contains"].as_str().unwrap();
                match template.render(&messages(&case["messages"]), true) {
                    Err(ChatError::Template(message)) => assert!(message.contains(fragment), "{name}: {message}"),
                    other => panic!("{name}: expected the template to refuse, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_template_inside_tokenizer_config_renders_the_same() {
        let dir = fixture("tiny_llama");
        let source = std::fs::read_to_string(dir.join("chat_template.jinja")).unwrap();
        let reference = read_json(&dir.join("reference.json"));
        let from_file = ChatTemplate::load(&dir).unwrap().unwrap();
        let forms = [
            serde_json::json!(source),
            serde_json::json!([{"name": "tool_use", "template": "{{ raise_exception('wrong one') }}"},
                               {"name": "default", "template": source}]),
        ];
        for form in forms {
            let mut config = read_json(&dir.join("tokenizer_config.json"));
            config["chat_template"] = form;
            let package = package(config, None);
            let inline = ChatTemplate::load(package.path()).unwrap().unwrap();
            assert_eq!(inline.eos_token(), from_file.eos_token());
            for case in reference["chat"].as_array().unwrap() {
                let messages = messages(&case["messages"]);
                assert_eq!(inline.render(&messages, true).unwrap(), from_file.render(&messages, true).unwrap());
            }
        }
    }

    #[test]
    fn packages_without_a_template_have_none() {
        let empty = tempfile::tempdir().unwrap();
        assert!(ChatTemplate::load(empty.path()).unwrap().is_none());
        let no_key = package(serde_json::json!({"eos_token": "</s>", "chat_template": null}), None);
        assert!(ChatTemplate::load(no_key.path()).unwrap().is_none());
    }

    #[test]
    fn broken_templates_and_configs_are_load_errors_naming_the_file() {
        let bad_file = package(serde_json::json!({}), Some("{% if messages %}never closed"));
        let err = ChatTemplate::load(bad_file.path()).unwrap_err();
        assert!(matches!(&err, EngineError::BadConfig { path, .. } if path.ends_with("chat_template.jinja")), "{err}");
        assert!(err.to_string().contains("does not compile"), "{err}");

        let bad_inline = package(serde_json::json!({"chat_template": "{{ 1 + }}"}), None);
        let err = ChatTemplate::load(bad_inline.path()).unwrap_err();
        assert!(
            matches!(&err, EngineError::BadConfig { path, .. } if path.ends_with("tokenizer_config.json")),
            "{err}"
        );

        let not_json = tempfile::tempdir().unwrap();
        std::fs::write(not_json.path().join("tokenizer_config.json"), "{").unwrap();
        let err = ChatTemplate::load(not_json.path()).unwrap_err();
        assert!(
            matches!(&err, EngineError::BadConfig { path, .. } if path.ends_with("tokenizer_config.json")),
            "{err}"
        );

        let huge = package(serde_json::json!({}), Some(&"x".repeat(MAX_TEMPLATE_BYTES as usize + 1)));
        let err = ChatTemplate::load(huge.path()).unwrap_err();
        assert!(
            matches!(&err, EngineError::FileTooLarge { path, .. } if path.ends_with("chat_template.jinja")),
            "{err}"
        );
    }

    #[test]
    fn runaway_templates_fail_instead_of_hanging() {
        let hi = [ChatMessage::new("user", "hi")];
        // Cheap in instructions, so the output cap stops it before the fuel does.
        let huge_output = "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}";
        assert!(matches!(from_source(huge_output).render(&hi, true), Err(ChatError::TooLarge { .. })));
        let runaway = [
            "{% for i in range(1000000000) %}x{% endfor %}",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
            "{% set ns = namespace(v=[]) %}{% for i in range(600) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v|tojson }}",
        ];
        for source in runaway {
            let result = from_source(source).render(&hi, true);
            assert!(matches!(result, Err(ChatError::Render(_))), "{source}: {result:?}");
        }
    }

    /// The expected text is Python Jinja2's output for this template in transformers' environment.
    #[test]
    fn speaks_the_hugging_face_dialect() {
        let template = from_source(
            r#"{{ bos_token }}
{%- for message in messages %}
    {%- if loop.index0 > 2 %}{% break %}{% endif %}
    {%- set content = message['content'].strip() %}
    {%- if message.role == 'system' %}
        {{- '[SYS] ' + content|upper + '\n' }}
    {%- elif message.role == 'assistant' %}
        {% generation %}
        {{- '[A] ' + content.split(' ')|join('|') + eos_token }}
        {% endgeneration %}
    {%- else %}
        {{- '[U' ~ loop.index ~ '] ' + content }}
        {%- if content.startswith('Hi') and not content.endswith('?') %} (greeting){% endif %}
        {%- if loop.previtem is defined %} after {{ loop.previtem.role }}{% endif %}

    {% endif %}
{%- endfor %}
{%- for k, v in messages[0].items() %}
  {{ k }}={{ v|length }}
{% endfor %}
{{ messages|tojson }}
{{ messages[:1]|tojson(indent=2) }}
{{ {'b': 1.5, 'a': [1e16, 0.00001, 3, none, true, 'é"\n\u007f'], 'c': {}} | tojson(sort_keys=true) }}
{{ {'x': 'é☃😀'} | tojson(ensure_ascii=true, separators=(',', ':')) }}
{{ tools is none }} {{ documents is defined }}
{%- if add_generation_prompt %}
[A] {% endif %}
"#,
        );
        let conversation = [
            ChatMessage::new("system", "  be brief  "),
            ChatMessage::new("user", "Hi there"),
            ChatMessage::new("assistant", "hello to you"),
            ChatMessage::new("user", "never seen"),
        ];
        let expected = "<s>[SYS] BE BRIEF\n[U2] Hi there (greeting) after system\n[A] hello|to|you</s>\n  role=6\n  content=12\n[{\"role\": \"system\", \"content\": \"  be brief  \"}, {\"role\": \"user\", \"content\": \"Hi there\"}, {\"role\": \"assistant\", \"content\": \"hello to you\"}, {\"role\": \"user\", \"content\": \"never seen\"}]\n[\n  {\n    \"role\": \"system\",\n    \"content\": \"  be brief  \"\n  }\n]\n{\"a\": [1e+16, 1e-05, 3, null, true, \"é\\\"\\n\u{7f}\"], \"b\": 1.5, \"c\": {}}\n{\"x\":\"\\u00e9\\u2603\\ud83d\\ude00\"}\nTrue True[A] ";
        assert_eq!(template.render(&conversation, true).unwrap(), expected);
    }

    /// Nested as deep as the fuel allows (90,000 levels; 110,000 runs out), then printed and sorted:
    /// recursions that would overflow an ordinary thread's stack and abort the process.
    #[test]
    fn values_nested_as_deep_as_fuel_allows_do_not_overflow_the_stack() {
        for depth in [90_000, 110_000] {
            let source = format!(
                "{{% set ns = namespace(v=[]) %}}{{% for i in range({}) %}}{{% for j in range(10) %}}\
                 {{% set ns.v = [ns.v] %}}{{% endfor %}}{{% endfor %}}{{{{ ns.v }}}}{{{{ [ns.v, ns.v]|sort }}}}",
                depth / 10
            );
            let result = from_source(&source).render(&[], true);
            assert!(matches!(result, Ok(_) | Err(ChatError::Render(_))), "{result:?}");
        }
    }

    #[test]
    fn generation_tags_become_plain_blocks() {
        let source = "a{%- generation %}b{%generation+%}{% endgeneration -%}{{ x }}{% if";
        assert_eq!(strip_generation_tags(source), "a{%- if true %}b{% if true +%}{% endif -%}{{ x }}{% if");
        assert_eq!(strip_generation_tags("{{ generation }}"), "{{ generation }}");
    }

    #[test]
    fn strftime_now_formats_the_local_date() {
        let year = from_source("{{ strftime_now('%Y-%m-%d') }}").render(&[], true).unwrap();
        assert_eq!(year.len(), 10, "{year}");
        assert!(year.starts_with("20"), "{year}");
    }

    #[test]
    fn null_content_reads_as_empty() {
        let parsed: Vec<ChatMessage> = serde_json::from_str(
            r#"[{"role": "assistant", "content": null}, {"role": "assistant"}, {"role": "user", "content": "x", "name": "n"}]"#,
        )
        .unwrap();
        assert_eq!(
            parsed,
            [ChatMessage::new("assistant", ""), ChatMessage::new("assistant", ""), ChatMessage::new("user", "x")]
        );
    }
}
