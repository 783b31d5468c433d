//! The search's memo: a set of (linearized operations as a bitset, model state) pairs that
//! have already been explored, plus the hashing it needs.
//!
//! It is an open-addressing table specialised for one use: insert-if-absent, never delete,
//! never iterate (so its order cannot leak into results). Bitsets live in one flat arena so an
//! entry costs no allocation of its own. It deliberately does not decide what to memoise.

use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Multiplier of the Fx hash (as in rustc) and of the final slot mix.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Slots at creation: small, since most partitions are small.
const SLOTS_INITIAL: usize = 64;

/// The table grows when entries exceed this fraction (numerator / 8) of the slots.
const LOAD_EIGHTHS_MAX: usize = 4;

/// The Fx hash: fast and good enough for small states mixed with Zobrist keys.
#[derive(Default)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(MIX);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

/// Builds [`FxHasher`]s, for lookup-only `HashMap`s on hot paths.
pub(crate) type FxBuildHasher = BuildHasherDefault<FxHasher>;

/// The Fx hash of a value.
#[inline]
pub(crate) fn fx_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = FxHasher::default();
    value.hash(&mut hasher);
    hasher.finish()
}

/// One pseudo-random 64-bit key per operation (splitmix64 from a fixed seed): the hash of a
/// bitset is the XOR of the keys of its members, kept up to date one bit at a time.
pub(crate) fn zobrist_keys(count: usize) -> Vec<u64> {
    let mut seed: u64 = 0x5EED_0F_C0FF_EE00;
    (0..count)
        .map(|_| {
            seed = seed.wrapping_add(MIX);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

/// The set of explored (bitset, state) pairs.
pub(crate) struct Memo<S> {
    /// Bitset length in words.
    words: usize,
    /// 0 when empty, else an index into the entries plus one.
    slots: Vec<u32>,
    /// `64 - log2(slots.len())`: the slot of a hash is its mixed top bits.
    shift: u32,
    hashes: Vec<u64>,
    states: Vec<S>,
    bits: Vec<u64>,
}

impl<S: Eq + Clone> Memo<S> {
    pub(crate) fn new(words: usize) -> Self {
        assert!(words > 0);
        Memo {
            words,
            slots: vec![0; SLOTS_INITIAL],
            shift: 64 - SLOTS_INITIAL.trailing_zeros(),
            hashes: Vec::new(),
            states: Vec::new(),
            bits: Vec::new(),
        }
    }

    /// Number of pairs stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    #[inline]
    fn slot_of(&self, hash: u64) -> usize {
        (hash.wrapping_mul(MIX) >> self.shift) as usize
    }

    /// Adds the pair unless present; returns whether it was absent. `hash` must be a function
    /// of the pair alone (equal pairs, equal hashes).
    #[inline]
    pub(crate) fn insert(&mut self, hash: u64, bits: &[u64], state: &S) -> bool {
        debug_assert_eq!(bits.len(), self.words);
        if (self.hashes.len() + 1) * 8 > self.slots.len() * LOAD_EIGHTHS_MAX {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut slot = self.slot_of(hash);
        loop {
            let occupant = self.slots[slot];
            if occupant == 0 {
                break;
            }
            let entry = (occupant - 1) as usize;
            if self.hashes[entry] == hash
                && self.states[entry] == *state
                && self.bits[entry * self.words..(entry + 1) * self.words] == *bits
            {
                return false;
            }
            slot = (slot + 1) & mask;
        }
        let entry = self.hashes.len();
        assert!(entry < u32::MAX as usize, "memo entries fit in u32");
        self.slots[slot] = entry as u32 + 1;
        self.hashes.push(hash);
        self.states.push(state.clone());
        self.bits.extend_from_slice(bits);
        true
    }

    fn grow(&mut self) {
        let slots_count = self.slots.len() * 2;
        self.slots = vec![0; slots_count];
        self.shift = 64 - slots_count.trailing_zeros();
        let mask = slots_count - 1;
        for (entry, &hash) in self.hashes.iter().enumerate() {
            let mut slot = (hash.wrapping_mul(MIX) >> self.shift) as usize;
            while self.slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = entry as u32 + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the memo is a set. Method: insert pairs that differ in bits or state, and repeats.
    #[test]
    fn insert_reports_absence_once() {
        let mut memo: Memo<u32> = Memo::new(2);
        let keys = zobrist_keys(128);
        for i in 0..1000u64 {
            let bits = [i, i / 3];
            let hash = keys[(i % 128) as usize] ^ fx_hash(&(i as u32 % 7));
            assert!(memo.insert(hash, &bits, &(i as u32 % 7)));
            assert!(!memo.insert(hash, &bits, &(i as u32 % 7)));
        }
        assert_eq!(memo.len(), 1000);
        assert!(memo.insert(keys[0] ^ fx_hash(&1u32), &[0, 0], &1));
    }

    #[test]
    fn zobrist_keys_are_distinct() {
        let mut keys = zobrist_keys(10_000);
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 10_000);
    }
}
