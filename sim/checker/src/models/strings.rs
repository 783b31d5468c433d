//! Interned strings that can be concatenated by id: the states of the kv model.
//!
//! Each string is stored once in a byte arena with a polynomial hash, which extends to a
//! concatenation without reading either string (`h(a + b) = h(a) * B^|b| + h(b)`). Looking up
//! a concatenation therefore allocates nothing and only compares bytes on a hash match; a new
//! one is copied into the arena. Ids are dense from 0.

/// Odd multiplier of the polynomial hash (arithmetic mod 2^64; equality is always checked on
/// the bytes, so a collision costs time, never correctness).
const BASE: u64 = 0x100_0000_01B3;

/// Slots at creation.
const SLOTS_INITIAL: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct Strings {
    arena: Vec<u8>,
    /// (start, len) in the arena, per id.
    spans: Vec<(usize, usize)>,
    hashes: Vec<u64>,
    /// BASE^len per id, to append it.
    powers: Vec<u64>,
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
        let mut strings = Strings {
            arena: Vec::new(),
            spans: Vec::new(),
            hashes: Vec::new(),
            powers: Vec::new(),
            slots: vec![0; SLOTS_INITIAL],
        };
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

    fn bytes(&self, id: u32) -> &[u8] {
        let (start, len) = self.spans[id as usize];
        &self.arena[start..start + len]
    }

    /// The text of an id.
    pub(crate) fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.bytes(id)).into_owned()
    }

    /// Finds the id whose bytes are `parts` concatenated, given their hash; else the free slot.
    fn find(&self, hash: u64, parts: [&[u8]; 2]) -> Result<u32, usize> {
        let len = parts[0].len() + parts[1].len();
        let mask = self.slots.len() - 1;
        let mut slot = self.slot_of(hash);
        loop {
            let occupant = self.slots[slot];
            if occupant == 0 {
                return Err(slot);
            }
            let id = occupant - 1;
            if self.hashes[id as usize] == hash && self.spans[id as usize].1 == len {
                let bytes = self.bytes(id);
                let (head, tail) = bytes.split_at(parts[0].len());
                if head == parts[0] && tail == parts[1] {
                    return Ok(id);
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Records a new id whose bytes were just pushed at `start..` in the arena.
    fn add(&mut self, slot: usize, start: usize, hash: u64, power: u64) -> u32 {
        let id = u32::try_from(self.spans.len()).expect("fewer than 2^32 strings");
        self.spans.push((start, self.arena.len() - start));
        self.hashes.push(hash);
        self.powers.push(power);
        self.slots[slot] = id + 1;
        if self.spans.len() * 2 > self.slots.len() {
            self.grow();
        }
        id
    }

    fn grow(&mut self) {
        let count = self.slots.len() * 2;
        self.slots = vec![0; count];
        for id in 0..self.spans.len() {
            let mut slot = self.slot_of(self.hashes[id]);
            while self.slots[slot] != 0 {
                slot = (slot + 1) & (count - 1);
            }
            self.slots[slot] = id as u32 + 1;
        }
    }

    /// The id of `text`, added if new.
    pub(crate) fn intern(&mut self, text: &str) -> u32 {
        let (hash, power) = hash_bytes(text.as_bytes());
        match self.find(hash, [text.as_bytes(), &[]]) {
            Ok(id) => id,
            Err(slot) => {
                let start = self.arena.len();
                self.arena.extend_from_slice(text.as_bytes());
                self.add(slot, start, hash, power)
            }
        }
    }

    /// The id of the concatenation of `a` and `b`, added if new.
    pub(crate) fn concat(&mut self, a: u32, b: u32) -> u32 {
        let (a, b) = (a as usize, b as usize);
        let hash = self.hashes[a].wrapping_mul(self.powers[b]).wrapping_add(self.hashes[b]);
        let power = self.powers[a].wrapping_mul(self.powers[b]);
        let found = self.find(hash, [self.bytes(a as u32), self.bytes(b as u32)]);
        match found {
            Ok(id) => id,
            Err(slot) => {
                let start = self.arena.len();
                let (a_start, a_len) = self.spans[a];
                let (b_start, b_len) = self.spans[b];
                self.arena.extend_from_within(a_start..a_start + a_len);
                self.arena.extend_from_within(b_start..b_start + b_len);
                self.add(slot, start, hash, power)
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
        let ab = s.intern("ab");
        let a = s.intern("a");
        let b = s.intern("b");
        assert_eq!(s.concat(a, b), ab);
        assert_eq!(s.concat(0, ab), ab);
        assert_eq!(s.concat(ab, 0), ab);
        assert_ne!(s.concat(b, a), ab);
    }
}
