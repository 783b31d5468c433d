//! The search's memo: the configurations already explored, each a (linearized operations that
//! return as a bitset, model state) pair with the sets of unknown-outcome operations it was
//! explored with; plus the hashing it needs (Fx, Zobrist keys).
//!
//! It is an open-addressing table specialised for one use: insert-unless-covered, never
//! delete an entry, never iterate (so its order cannot leak into results). Bitsets live in flat
//! arenas so an entry costs no allocation of its own. It deliberately does not decide what to
//! memoise: the search does.

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
    let mut seed: u64 = 0x5EED_0FC0_FFEE_0001;
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

/// Marks the end of a chain, and a configuration that has no set (nothing to finish).
const END: u32 = u32::MAX;

/// What the search records for a configuration it does not memoise.
pub(crate) const NO_MEMO: u32 = END;

/// The explored configurations of the search: (set of linearized operations that have a
/// return, state) pairs, each with the sets of linearized unknown-outcome operations it was
/// explored with.
///
/// A configuration is covered by an explored one with the same returning set and state and a
/// subset of its unknown-outcome set: unknown-outcome operations never have to be linearized,
/// so whatever the larger set can still do, the smaller one can do in as many steps.
pub(crate) struct Memo<S> {
    /// Bitset lengths in words: returning operations, unknown-outcome operations (maybe 0).
    words: usize,
    unknown_words: usize,
    /// 0 when empty, else an index into the entries plus one.
    slots: Vec<u32>,
    /// `64 - log2(slots.len())`: the slot of a hash is its mixed top bits.
    shift: u32,
    hashes: Vec<u64>,
    states: Vec<S>,
    bits: Vec<u64>,
    /// Per entry, the first of its unknown-outcome sets in `sets`, or [`END`].
    heads: Vec<u32>,
    /// Unknown-outcome sets, `unknown_words` each, chained by `sets_next`.
    sets: Vec<u64>,
    sets_next: Vec<u32>,
    /// Whether each set is fully explored.
    sets_done: Vec<bool>,
    /// The entry of each set.
    sets_entry: Vec<u32>,
}

/// Whether every member of `small` is in `large`.
#[inline]
fn subset(small: &[u64], large: &[u64]) -> bool {
    small.iter().zip(large).all(|(s, l)| s & !l == 0)
}

impl<S: Eq + Clone> Memo<S> {
    pub(crate) fn new(words: usize, unknown_words: usize) -> Self {
        assert!(words > 0);
        Memo {
            words,
            unknown_words,
            slots: vec![0; SLOTS_INITIAL],
            shift: 64 - SLOTS_INITIAL.trailing_zeros(),
            hashes: Vec::new(),
            states: Vec::new(),
            bits: Vec::new(),
            heads: Vec::new(),
            sets: Vec::new(),
            sets_next: Vec::new(),
            sets_done: Vec::new(),
            sets_entry: Vec::new(),
        }
    }

    /// Bytes its tables hold (their capacities; a state's own heap, if any, is not counted).
    pub(crate) fn bytes(&self) -> usize {
        use std::mem::size_of;
        self.slots.capacity() * size_of::<u32>()
            + self.hashes.capacity() * size_of::<u64>()
            + self.states.capacity() * size_of::<S>()
            + self.bits.capacity() * size_of::<u64>()
            + self.heads.capacity() * size_of::<u32>()
            + self.sets.capacity() * size_of::<u64>()
            + self.sets_next.capacity() * size_of::<u32>()
            + self.sets_done.capacity() * size_of::<bool>()
            + self.sets_entry.capacity() * size_of::<u32>()
    }

    /// Number of (returning set, state) pairs stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    #[inline]
    fn slot_of(&self, hash: u64) -> usize {
        (hash.wrapping_mul(MIX) >> self.shift) as usize
    }

    /// Records the configuration (`bits`, `state`, `unknown`) unless an explored one covers it.
    /// Returns `None` when covered, else the id to pass to [`Memo::finish`] once the
    /// configuration is fully explored. `hash` must be a function of (`bits`, `state`) alone.
    #[inline]
    pub(crate) fn insert(&mut self, hash: u64, bits: &[u64], state: &S, unknown: &[u64]) -> Option<u32> {
        debug_assert_eq!(bits.len(), self.words);
        debug_assert_eq!(unknown.len(), self.unknown_words);
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
                return self.insert_unknown(entry, unknown);
            }
            slot = (slot + 1) & mask;
        }
        let entry = self.hashes.len();
        assert!(entry < u32::MAX as usize, "memo entries fit in u32");
        self.slots[slot] = entry as u32 + 1;
        self.hashes.push(hash);
        self.states.push(state.clone());
        self.bits.extend_from_slice(bits);
        self.heads.push(END);
        if self.unknown_words == 0 {
            return Some(END);
        }
        Some(self.push_set(entry, unknown))
    }

    /// Adds `unknown` to the entry's sets unless a fully explored one is a subset of it. Sets
    /// still being explored (on the search's path) cover nothing yet: pruning by them would
    /// defer the answer to a later branch and make the search longer.
    fn insert_unknown(&mut self, entry: usize, unknown: &[u64]) -> Option<u32> {
        let w = self.unknown_words;
        if w == 0 {
            return None;
        }
        let mut set = self.heads[entry];
        while set != END {
            let stored = &self.sets[set as usize * w..(set as usize + 1) * w];
            if self.sets_done[set as usize] && subset(stored, unknown) {
                return None;
            }
            set = self.sets_next[set as usize];
        }
        Some(self.push_set(entry, unknown))
    }

    fn push_set(&mut self, entry: usize, unknown: &[u64]) -> u32 {
        let set = u32::try_from(self.sets_next.len()).expect("memo sets fit in u32");
        assert!(set != END);
        self.sets.extend_from_slice(unknown);
        self.sets_next.push(self.heads[entry]);
        self.sets_done.push(false);
        self.sets_entry.push(entry as u32);
        self.heads[entry] = set;
        set
    }

    /// Marks a configuration returned by [`Memo::insert`] as fully explored, and drops the
    /// explored sets of its entry that it now covers.
    #[inline]
    pub(crate) fn finish(&mut self, set: u32) {
        if set == END {
            return;
        }
        let w = self.unknown_words;
        let finished = set as usize;
        self.sets_done[finished] = true;
        let entry = self.sets_entry[finished] as usize;
        let mut previous = END;
        let mut current = self.heads[entry];
        while current != END {
            let c = current as usize;
            let next = self.sets_next[c];
            let covered = c != finished
                && self.sets_done[c]
                && subset(&self.sets[finished * w..(finished + 1) * w], &self.sets[c * w..(c + 1) * w]);
            if covered {
                if previous == END {
                    self.heads[entry] = next;
                } else {
                    self.sets_next[previous as usize] = next;
                }
            } else {
                previous = current;
            }
            current = next;
        }
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
        let mut memo: Memo<u32> = Memo::new(2, 0);
        let keys = zobrist_keys(128);
        for i in 0..1000u64 {
            let bits = [i, i / 3];
            let hash = keys[(i % 128) as usize] ^ fx_hash(&(i as u32 % 7));
            assert!(memo.insert(hash, &bits, &(i as u32 % 7), &[]).is_some());
            assert!(memo.insert(hash, &bits, &(i as u32 % 7), &[]).is_none());
        }
        assert_eq!(memo.len(), 1000);
        assert!(memo.insert(keys[0] ^ fx_hash(&1u32), &[0, 0], &1, &[]).is_some());
    }

    #[test]
    fn zobrist_keys_are_distinct() {
        let mut keys = zobrist_keys(10_000);
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 10_000);
    }

    /// Goal: a configuration is covered by a fully explored one with a subset of its
    /// unknown-outcome operations, and not by one still being explored. Method: insert unknown
    /// sets {1}, {1,2}, {2}, {} for the same (bits, state), finishing some.
    #[test]
    fn smaller_explored_unknown_sets_cover_larger_ones() {
        let mut memo: Memo<u32> = Memo::new(1, 1);
        let one = memo.insert(7, &[1], &3, &[0b010]).unwrap();
        assert!(memo.insert(7, &[1], &3, &[0b110]).is_some(), "{{1}} is still being explored");
        memo.finish(one);
        assert!(memo.insert(7, &[1], &3, &[0b110]).is_none(), "{{1,2}} is covered by {{1}}");
        let two = memo.insert(7, &[1], &3, &[0b100]).unwrap();
        memo.finish(two);
        assert!(memo.insert(7, &[1], &3, &[0b100]).is_none());
        let none = memo.insert(7, &[1], &3, &[0b000]).unwrap();
        memo.finish(none);
        assert!(memo.insert(7, &[1], &3, &[0b001]).is_none(), "{{}} covers everything");
        assert!(memo.insert(7, &[1], &4, &[0b110]).is_some(), "another state");
        assert_eq!(memo.len(), 2);
    }
}
