//! A batch of token sequences, padded on the right to a common length, with its attention mask.

use super::error::{EngineError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub batch: usize,
    pub seq: usize,
    /// `[batch, seq]` row-major; padding positions hold 0.
    pub ids: Vec<u32>,
    /// `[batch, seq]`; false at padding positions.
    pub mask: Vec<bool>,
    /// `[batch, seq]`; all 0 unless the caller gives segment ids.
    pub type_ids: Vec<u32>,
}

impl TokenBatch {
    /// Pads `seqs` on the right to the longest one.
    pub fn from_sequences(seqs: &[Vec<u32>]) -> Result<Self> {
        if seqs.is_empty() {
            return Err(EngineError::BadInput("no input sequences".into()));
        }
        if let Some(i) = seqs.iter().position(Vec::is_empty) {
            return Err(EngineError::BadInput(format!("sequence {i} is empty")));
        }
        let batch = seqs.len();
        let seq = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = vec![0; batch * seq];
        let mut mask = vec![false; batch * seq];
        for (b, s) in seqs.iter().enumerate() {
            ids[b * seq..b * seq + s.len()].copy_from_slice(s);
            mask[b * seq..b * seq + s.len()].fill(true);
        }
        Ok(Self { batch, seq, ids, mask, type_ids: vec![0; batch * seq] })
    }

    /// A batch given as flat `[batch, seq]` tensors, as the inference API receives it.
    pub fn from_tensors(
        batch: usize,
        seq: usize,
        ids: Vec<u32>,
        mask: Option<Vec<bool>>,
        type_ids: Option<Vec<u32>>,
    ) -> Result<Self> {
        let n = batch
            .checked_mul(seq)
            .filter(|&n| n > 0)
            .ok_or_else(|| EngineError::BadInput(format!("shape [{batch}, {seq}] holds no tokens")))?;
        let check = |what: &str, len: usize| {
            if len == n {
                Ok(())
            } else {
                Err(EngineError::BadInput(format!("{what} has {len} elements, expected {batch}×{seq}")))
            }
        };
        check("input_ids", ids.len())?;
        let mask = mask.unwrap_or_else(|| vec![true; n]);
        check("attention_mask", mask.len())?;
        let type_ids = type_ids.unwrap_or_else(|| vec![0; n]);
        check("token_type_ids", type_ids.len())?;
        Ok(Self { batch, seq, ids, mask, type_ids })
    }

    /// Checks ids and segment ids against a model's vocabulary and position limits.
    pub fn validate(&self, vocab: usize, type_vocab: usize, max_positions: usize) -> Result<()> {
        if self.seq > max_positions {
            return Err(EngineError::BadInput(format!(
                "sequence length {} exceeds the model's {max_positions} positions",
                self.seq
            )));
        }
        if let Some((i, &id)) = self.ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(EngineError::BadInput(format!(
                "token id {id} at [{}, {}] is outside the vocabulary of {vocab}",
                i / self.seq,
                i % self.seq
            )));
        }
        if let Some(&t) = self.type_ids.iter().find(|&&t| t as usize >= type_vocab) {
            return Err(EngineError::BadInput(format!("token type id {t} is outside 0..{type_vocab}")));
        }
        // A sequence with nothing to attend to has no output a model could give.
        if let Some(b) = (0..self.batch).find(|&b| !self.mask[b * self.seq..(b + 1) * self.seq].contains(&true)) {
            return Err(EngineError::BadInput(format!(
                "sequence {b} has no attended token: its attention_mask is all zero"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_right_and_masks() {
        let b = TokenBatch::from_sequences(&[vec![5, 6, 7], vec![9]]).unwrap();
        assert_eq!((b.batch, b.seq), (2, 3));
        assert_eq!(b.ids, vec![5, 6, 7, 9, 0, 0]);
        assert_eq!(b.mask, vec![true, true, true, true, false, false]);
    }

    #[test]
    fn rejects_bad_shapes_and_ids() {
        assert!(TokenBatch::from_sequences(&[]).is_err());
        assert!(TokenBatch::from_sequences(&[vec![1], vec![]]).is_err());
        assert!(TokenBatch::from_tensors(2, 2, vec![1, 2, 3], None, None).is_err());
        let b = TokenBatch::from_sequences(&[vec![1, 600]]).unwrap();
        let err = b.validate(512, 2, 128).unwrap_err().to_string();
        assert!(err.contains("600"), "{err}");
        assert!(b.validate(1000, 2, 1).is_err());
        let unattended = TokenBatch::from_tensors(2, 2, vec![1, 2, 3, 4], Some(vec![true, false, false, false]), None);
        let err = unattended.unwrap().validate(512, 2, 128).unwrap_err().to_string();
        assert!(err.contains("sequence 1") && err.contains("all zero"), "{err}");
    }
}
