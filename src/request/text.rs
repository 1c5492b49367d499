//! The text of a generation as the OpenAI-compatible API answers it: the tokenizer's decode of
//! the new ids (special tokens skipped, the end-of-sequence id that ended it left out), cut
//! before the first stop string. Streamed, a piece goes out only once no later token can change
//! it — not while the text ends inside a character (the decode then ends in U+FFFD), nor text
//! that may be the start of a stop string — so the pieces add up to the text a request without
//! streaming gets.

/// `ids` without the end-of-sequence id that ended the generation (the last one, if any).
pub fn without_eos<'a>(ids: &'a [u32], eos: &[u32]) -> &'a [u32] {
    match ids.split_last() {
        Some((last, rest)) if eos.contains(last) => rest,
        _ => ids,
    }
}

/// `text` cut before the first stop string in it, and whether one was.
pub fn cut_at_stop(mut text: String, stop: &[String]) -> (String, bool) {
    match first_stop(&text, stop) {
        Some(at) => {
            text.truncate(at);
            (text, true)
        }
        None => (text, false),
    }
}

fn first_stop(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// Bytes at the end of `text` that may be the start of a stop string (the longest such).
fn may_start_stop(text: &str, stop: &[String]) -> usize {
    stop.iter()
        .filter_map(|s| (1..s.len()).rev().find(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k])))
        .max()
        .unwrap_or(0)
}

/// The pieces of a streamed generation's text, one token at a time.
pub struct TextStream {
    eos: Vec<u32>,
    stop: Vec<String>,
    ids: Vec<u32>,
    /// The text sent so far.
    sent: String,
    /// A stop string appeared: nothing more is sent but the final text's rest.
    stopped: bool,
}

impl TextStream {
    pub fn new(eos: &[u32], stop: &[String]) -> Self {
        Self { eos: eos.to_vec(), stop: stop.to_vec(), ids: Vec::new(), sent: String::new(), stopped: false }
    }

    /// The piece the new token `id` makes safe to send, if any; `decode` gives the text of ids.
    /// An end-of-sequence id adds nothing: it ends the generation and is not part of its text.
    pub fn push(&mut self, id: u32, decode: impl FnOnce(&[u32]) -> Option<String>) -> Option<String> {
        if self.stopped || self.eos.contains(&id) {
            return None;
        }
        self.ids.push(id);
        let text = decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') {
            return None;
        }
        let safe = match first_stop(&text, &self.stop) {
            Some(at) => {
                self.stopped = true;
                at
            }
            None => text.len() - may_start_stop(&text, &self.stop),
        };
        self.advance(&text[..safe])
    }

    /// What is left to send of the generation's final text.
    pub fn rest(&mut self, final_text: &str) -> Option<String> {
        self.advance(final_text)
    }

    /// The part of `visible` not sent yet. Decoding more ids only appends to a decode's text,
    /// so `visible` extends what was sent.
    fn advance(&mut self, visible: &str) -> Option<String> {
        let piece = visible.strip_prefix(self.sent.as_str()).filter(|p| !p.is_empty())?.to_string();
        self.sent.push_str(&piece);
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level vocabulary: id `b` is the byte `b`; 256 is a special token (no text).
    fn decode(ids: &[u32]) -> Option<String> {
        let bytes: Vec<u8> = ids.iter().filter(|&&i| i < 256).map(|&i| i as u8).collect();
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn ids(text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    /// Streams `ids` and returns the pieces and the final text.
    fn stream(ids: &[u32], eos: &[u32], stop: &[&str]) -> (Vec<String>, String) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut s = TextStream::new(eos, &stop);
        let mut pieces: Vec<String> = ids.iter().filter_map(|&id| s.push(id, decode)).collect();
        let (text, _) = cut_at_stop(decode(without_eos(ids, eos)).unwrap(), &stop);
        pieces.extend(s.rest(&text));
        (pieces, text)
    }

    #[test]
    fn pieces_wait_for_whole_characters() {
        let (pieces, text) = stream(&ids("aé€b"), &[], &[]);
        assert_eq!(pieces, ["a", "é", "€", "b"]);
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn a_stop_string_ends_the_text_and_may_span_tokens() {
        let (pieces, text) = stream(&ids("hello END world"), &[], &["END"]);
        assert_eq!(text, "hello ");
        assert_eq!(pieces.concat(), text);
        // "E" and "EN" were held back until they turned out to be the stop string.
        assert!(pieces.iter().all(|p| !p.contains('E')), "{pieces:?}");
        // Text that only looked like a stop string's start goes out once it is not one.
        let (pieces, text) = stream(&ids("an ENd"), &[], &["END", "xyz"]);
        assert_eq!((pieces.concat(), text.as_str()), ("an ENd".to_string(), "an ENd"));
        // The earliest of several stop strings wins.
        let (pieces, text) = stream(&ids("abcdef"), &[], &["de", "bc"]);
        assert_eq!((pieces.concat(), text.as_str()), ("a".to_string(), "a"));
    }

    #[test]
    fn the_end_of_sequence_id_adds_no_text_and_unfinished_characters_come_out_at_the_end() {
        let (pieces, text) = stream(&[104, 105, 256], &[256], &[]);
        assert_eq!((pieces.concat(), text.as_str()), ("hi".to_string(), "hi"));
        assert_eq!(without_eos(&[1, 2, 256], &[256]), [1, 2]);
        assert_eq!(without_eos(&[1, 2], &[256]), [1, 2]);
        // A generation cut off inside a character ends with U+FFFD, streamed or not.
        let euro = ids("€");
        let (pieces, text) = stream(&[b'a'.into(), euro[0], euro[1]], &[], &[]);
        assert_eq!((pieces.concat(), text.as_str()), ("a\u{FFFD}".to_string(), "a\u{FFFD}"));
        // Stop strings with characters of several bytes are held back at character boundaries.
        let (pieces, text) = stream(&ids("x€y€z"), &[], &["€z"]);
        assert_eq!((pieces.concat(), text.as_str()), ("x€y".to_string(), "x€y"));
    }
}
