//! Interned strings that can be concatenated by id: the states of the kv model.
//!
//! A string is either a leaf (bytes in an arena) or the concatenation of two interned strings,
//! stored as the pair of ids: building a new state by an append copies no bytes. Each string
//! has a polynomial hash that extends to a concatenation without reading either side
//! (`h(a + b) = h(a) * B^|b| + h(b)`). Equal texts always get the same id: a lookup compares
//! the pair of ids first and, only when they differ under an equal hash and length, the
//! bytes. Ids are dense from 0.

/// Odd multiplier of the polynomial hash (arithmetic mod 2^64; equality is always checked, so
/// a collision costs time, never correctness).
const BASE: u64 = 0x100_0000_01B3;

/// Slots at creation.
const SLOTS_INITIAL: usize = 64;

#[derive(Debug, Clone, Copy)]
enum Body {
    /// Bytes `start..start + len` of the arena.
    Leaf { start: usize },
    /// The texts of two ids, in order.
    Concat { left: u32, right: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Node {
    hash: u64,
    /// BASE^len, to append this string to another.
    power: u64,
    len: usize,
    body: Body,
}

#[derive(Debug, Clone)]
pub(crate) struct Strings {
    arena: Vec<u8>,
    nodes: Vec<Node>,
    /// Open addressing: 0 when empty, else id + 1.
    slots: Vec<u32>,
}

fn hash_bytes(bytes: &[u8]) -> (u64, u64) {
    let mut hash = 0u64;
    let mut power = 1u64;
    for &b in bytes {
        hash = hash.wrapping_mul(BASE).wrapping_add(u64::from(b) + 1);
        power = power.wrapping_mul(BASE);
    }
    (hash, power)
}

impl Strings {
    /// A table holding `""` as id 0.
    pub(crate) fn new() -> Self {
        let mut strings = Strings { arena: Vec::new(), nodes: Vec::new(), slots: vec![0; SLOTS_INITIAL] };
        let empty = strings.intern("");
        assert_eq!(empty, 0);
        strings
    }

    #[inline]
    fn slot_of(&self, hash: u64) -> usize {
        // Mix so that the top bits depend on every bit of the hash.
        let mixed = (hash ^ (hash >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    /// Appends the bytes of `id` to `out` (iteratively: concatenations nest deeply).
    fn write_bytes(&self, id: u32, out: &mut Vec<u8>) {
        let mut pending = vec![id];
        while let Some(id) = pending.pop() {
            let node = self.nodes[id as usize];
            match node.body {
                Body::Leaf { start } => out.extend_from_slice(&self.arena[start..start + node.len]),
                Body::Concat { left, right } => {
                    pending.push(right);
                    pending.push(left);
                }
            }
        }
    }

    /// The text of an id.
    pub(crate) fn text(&self, id: u32) -> String {
        let mut bytes = Vec::with_capacity(self.nodes[id as usize].len);
        self.write_bytes(id, &mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Finds the id with this hash and length whose text is `wanted`'s (computed only when
    /// needed); `same` recognises the candidate by structure without reading bytes.
    fn find(
        &self,
        hash: u64,
        len: usize,
        same: impl Fn(&Node) -> bool,
        wanted: impl Fn(&Self) -> Vec<u8>,
    ) -> Result<u32, usize> {
        let mask = self.slots.len() - 1;
        let mut slot = self.slot_of(hash);
        let mut wanted_bytes: Option<Vec<u8>> = None;
        loop {
            let occupant = self.slots[slot];
            if occupant == 0 {
                return Err(slot);
            }
            let id = occupant - 1;
            let node = &self.nodes[id as usize];
            if node.hash == hash && node.len == len {
                if same(node) {
                    return Ok(id);
                }
                let wanted = wanted_bytes.get_or_insert_with(|| wanted(self));
                let mut candidate = Vec::with_capacity(len);
                self.write_bytes(id, &mut candidate);
                if candidate == *wanted {
                    return Ok(id);
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    fn add(&mut self, slot: usize, node: Node) -> u32 {
        let id = u32::try_from(self.nodes.len()).expect("fewer than 2^32 strings");
        self.nodes.push(node);
        self.slots[slot] = id + 1;
        if self.nodes.len() * 2 > self.slots.len() {
            self.grow();
        }
        id
    }

    fn grow(&mut self) {
        let count = self.slots.len() * 2;
        self.slots = vec![0; count];
        for id in 0..self.nodes.len() {
            let mut slot = self.slot_of(self.nodes[id].hash);
            while self.slots[slot] != 0 {
                slot = (slot + 1) & (count - 1);
            }
            self.slots[slot] = id as u32 + 1;
        }
    }

    /// The id of `text`, added if new.
    pub(crate) fn intern(&mut self, text: &str) -> u32 {
        let bytes = text.as_bytes();
        let (hash, power) = hash_bytes(bytes);
        let arena = &self.arena;
        let same = |node: &Node| match node.body {
            Body::Leaf { start } => arena[start..start + node.len] == *bytes,
            Body::Concat { .. } => false,
        };
        match self.find(hash, bytes.len(), same, |_| bytes.to_vec()) {
            Ok(id) => id,
            Err(slot) => {
                let start = self.arena.len();
                self.arena.extend_from_slice(bytes);
                let node = Node { hash, power, len: bytes.len(), body: Body::Leaf { start } };
                self.add(slot, node)
            }
        }
    }

    /// The id of the concatenation of `a` and `b`, added if new.
    pub(crate) fn concat(&mut self, a: u32, b: u32) -> u32 {
        let (na, nb) = (self.nodes[a as usize], self.nodes[b as usize]);
        if nb.len == 0 {
            return a;
        }
        if na.len == 0 {
            return b;
        }
        let hash = na.hash.wrapping_mul(nb.power).wrapping_add(nb.hash);
        let len = na.len + nb.len;
        let same = |node: &Node| matches!(node.body, Body::Concat { left, right } if left == a && right == b);
        let wanted = |strings: &Self| {
            let mut bytes = Vec::with_capacity(len);
            strings.write_bytes(a, &mut bytes);
            strings.write_bytes(b, &mut bytes);
            bytes
        };
        match self.find(hash, len, same, wanted) {
            Ok(id) => id,
            Err(slot) => {
                let node = Node {
                    hash,
                    power: na.power.wrapping_mul(nb.power),
                    len,
                    body: Body::Concat { left: a, right: b },
                };
                self.add(slot, node)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: equal texts get equal ids however they were built. Method: build strings by
    /// interning and by concatenation in different groupings, across table growth.
    #[test]
    fn concatenation_and_interning_agree() {
        let mut s = Strings::new();
        let parts: Vec<u32> = (0..300).map(|i| s.intern(&format!("x {i} y"))).collect();
        let mut left = 0;
        for &p in &parts {
            left = s.concat(left, p);
        }
        let whole: String = (0..300).map(|i| format!("x {i} y")).collect();
        assert_eq!(s.intern(&whole), left);
        assert_eq!(s.text(left), whole);
        // The same text grouped from the right.
        let mut right = 0;
        for &p in parts.iter().rev() {
            right = s.concat(p, right);
        }
        assert_eq!(right, left);
        let ab = s.intern("ab");
        let a = s.intern("a");
        let b = s.intern("b");
        assert_eq!(s.concat(a, b), ab);
        assert_eq!(s.concat(0, ab), ab);
        assert_eq!(s.concat(ab, 0), ab);
        assert_ne!(s.concat(b, a), ab);
        let aab = s.concat(a, ab);
        let aa = s.concat(a, a);
        assert_eq!(s.concat(aa, b), aab);
        assert_eq!(s.text(aab), "aab");
    }
}
