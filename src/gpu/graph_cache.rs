//! Which captured CUDA graphs to keep. A graph replays one program's launches at fixed
//! addresses: the weights' place in the pool and the workspace offsets. The program's orders
//! name every address, so a graph is reusable exactly when the weights base and the order list
//! are equal, whichever model now sits there (a resident model's bytes are what a fresh run
//! would read too). Least recently used graphs go first.

use std::collections::VecDeque;

use crate::engine::program::Op;

/// What identifies a captured graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphKey {
    pub weights: u64,
    pub ops: Vec<Op>,
}

#[derive(Debug)]
pub struct GraphCache<H> {
    entries: VecDeque<(GraphKey, H)>,
    capacity: usize,
}

impl<H> GraphCache<H> {
    pub fn new(capacity: usize) -> Self {
        Self { entries: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// The graph for `weights` and `ops`, marked most recently used.
    pub fn get(&mut self, weights: u64, ops: &[Op]) -> Option<&H> {
        let i = self.entries.iter().position(|(k, _)| k.weights == weights && k.ops == ops)?;
        let entry = self.entries.remove(i).expect("found above");
        self.entries.push_front(entry);
        self.entries.front().map(|(_, h)| h)
    }

    /// Keeps a new graph; returns the one it displaces, for the caller to destroy.
    pub fn insert(&mut self, key: GraphKey, handle: H) -> Option<H> {
        self.entries.push_front((key, handle));
        (self.entries.len() > self.capacity).then(|| self.entries.pop_back().map(|(_, h)| h)).flatten()
    }

    /// Every graph, for the caller to destroy.
    pub fn drain(&mut self) -> Vec<H> {
        self.entries.drain(..).map(|(_, h)| h).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(weights: u64, layer: usize) -> GraphKey {
        GraphKey { weights, ops: vec![Op::WaitLayer(layer)] }
    }

    #[test]
    fn reuses_exact_matches_and_evicts_the_least_recently_used() {
        let mut c = GraphCache::new(2);
        assert!(c.insert(key(0, 1), "a").is_none());
        assert!(c.insert(key(0, 2), "b").is_none());
        assert_eq!(c.get(0, &[Op::WaitLayer(1)]), Some(&"a"), "same base, same orders");
        assert_eq!(c.get(4096, &[Op::WaitLayer(1)]), None, "another base is another graph");
        assert_eq!(c.get(0, &[Op::WaitLayer(3)]), None);
        // "b" is now the least recently used.
        assert_eq!(c.insert(key(8, 1), "c"), Some("b"));
        assert_eq!(c.drain(), vec!["c", "a"], "two kept, most recent first");
        assert!(c.drain().is_empty());
    }
}
