//! A decoder's key/value cache in the workspace: per layer `[batch, heads, capacity, head_dim]`
//! keys and values, and a key mask `[batch, capacity]`. They are the first regions a decoder's
//! program takes, and depend only on the batch and the capacity, so the prefill and every
//! decoding step of one generation share them.

use super::Regions;
use crate::engine::program::Op;

#[derive(Debug, Clone, Copy)]
pub struct KvCache {
    pub k: usize,
    pub v: usize,
    pub key_mask: usize,
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub capacity: usize,
}

impl KvCache {
    /// Takes the cache's regions: call first, before any other region of the program.
    pub fn take(r: &mut Regions, layers: usize, batch: usize, heads: usize, head_dim: usize, capacity: usize) -> Self {
        let per_layer = batch * heads * capacity * head_dim;
        let k = r.take(layers * per_layer);
        let v = r.take(layers * per_layer);
        let key_mask = r.take(batch * capacity);
        Self { k, v, key_mask, batch, heads, head_dim, capacity }
    }

    fn per_layer(&self) -> usize {
        self.batch * self.heads * self.capacity * self.head_dim
    }

    /// Layer `l`'s keys and values.
    pub fn layer(&self, l: usize) -> (usize, usize) {
        (self.k + l * self.per_layer(), self.v + l * self.per_layer())
    }

    /// Where batch item `b`'s keys and values start within a layer's.
    pub fn item(&self, b: usize) -> usize {
        b * self.heads * self.capacity * self.head_dim
    }

    /// Appends the keys and values of `t` new rows per batch item of `qkv[batch·t, (q_heads +
    /// 2·heads)·d]` to layer `l`, at positions `start..start + t`.
    pub fn append(&self, l: usize, qkv: usize, q_heads: usize, t: usize, start: usize) -> Op {
        let (k, v) = self.layer(l);
        Op::KvAppend {
            qkv,
            k,
            v,
            batch: self.batch,
            t,
            q_heads,
            heads: self.heads,
            head_dim: self.head_dim,
            capacity: self.capacity,
            start,
        }
    }
}
