//! A sweep's summary (what `sweep --json` prints and `--summary FILE` writes), and merging the
//! summaries of a sharded sweep into the report of the whole sweep.
//!
//! A shard is the seeds whose offset from the sweep's first seed is `index` modulo `of`, so the
//! shards of one sweep partition its seeds. Merging checks that every summary comes from the
//! same sweep (scenario, bug, cluster size, seed range, shard count and build) and that each
//! shard appears once; it then sums counts, coverage marks and trace digests and joins the
//! failures in seed order. The merged report of all shards equals the unsharded sweep's report
//! in everything but timing: seeds, failures, marks and the trace digest.
//!
//! Pure: compiles in both builds, so any build of the CLI merges.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Shard `index` of `of` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub of: u64,
}

impl Shard {
    /// The whole sweep as one shard.
    pub const WHOLE: Shard = Shard { index: 0, of: 1 };

    /// Parses `I/N` with `I < N`.
    ///
    /// # Errors
    /// A message naming what is wrong with the value.
    pub fn parse(value: &str) -> Result<Shard, String> {
        let (i, n) = value.split_once('/').ok_or_else(|| format!("expected I/N, got {value:?}"))?;
        let index: u64 = i.trim().parse().map_err(|_| format!("shard index {i:?} is not a number"))?;
        let of: u64 = n.trim().parse().map_err(|_| format!("shard count {n:?} is not a number"))?;
        if of == 0 {
            return Err("the shard count must be at least 1".into());
        }
        if index >= of {
            return Err(format!("the shard index must be below the count (0..{of}), got {index}"));
        }
        Ok(Shard { index, of })
    }

    /// The seeds of `from..from + count` that belong to this shard, in order.
    pub fn seeds(self, from: u64, count: u64) -> impl Iterator<Item = u64> {
        let end = from.saturating_add(count);
        let first = from.saturating_add(self.index).min(end);
        (first..end).step_by(self.of as usize)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

/// One failing seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub seed: u64,
    /// The invariants it broke.
    pub invariants: Vec<String>,
    /// The repro token (`testbed repro --token`).
    pub token: String,
    /// The command that replays it.
    pub reproduce: String,
}

/// What a sweep, a shard of one or a merge of shards ran and found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    pub scenario: String,
    pub bug: Option<String>,
    pub crdb_nodes: usize,
    /// The sweep's seeds: `from..from + count`, before sharding.
    pub from: u64,
    pub count: u64,
    /// How many shards the sweep was cut into (1 when unsharded).
    pub shard_count: u64,
    /// The shards this summary covers: one for a shard's own summary, all for a full merge.
    pub shards: Vec<u64>,
    /// Seeds run.
    pub seeds: u64,
    /// Failing seeds, in seed order.
    pub failures: Vec<Failure>,
    /// Coverage marks summed over the seeds.
    pub coverage: BTreeMap<String, u64>,
    /// Outcomes the clients saw (`verdict::OUTCOMES`), summed over the seeds.
    #[serde(default)]
    pub outcomes: BTreeMap<String, u64>,
    /// The wrapping sum of every run's trace hash, in hex: equal for two sweeps that ran the
    /// same seeds to the same traces, however they were sharded.
    pub trace_digest: String,
    /// Simulated time summed over the seeds, in milliseconds (exact, so sums merge exactly),
    /// and in seconds.
    pub simulated_ms: u64,
    pub simulated_seconds: f64,
    /// Wall time: of the sweep, or for a merge the longest shard's (shards run side by side).
    pub seconds: f64,
    /// Wall time summed over the shards.
    pub shard_seconds: f64,
    /// Seeds per wall second: for a merge, the sum of the shards' rates (their throughput when
    /// they run side by side).
    pub seeds_per_second: f64,
    /// Peak resident memory of one sweep process, MB (for a merge, the largest).
    pub peak_rss_mb: f64,
    /// The build that ran it (git commit, rustc): replays need the same.
    pub commit: String,
}

impl SweepSummary {
    /// The shard, when this summary is one shard's.
    pub fn shard(&self) -> Option<Shard> {
        match self.shards.as_slice() {
            [index] if self.shard_count > 1 => Some(Shard { index: *index, of: self.shard_count }),
            _ => None,
        }
    }

    /// True when every shard of the sweep is here.
    pub fn complete(&self) -> bool {
        self.shards.len() as u64 == self.shard_count
    }

    /// The shards not covered, in order.
    pub fn missing(&self) -> Vec<u64> {
        (0..self.shard_count).filter(|i| self.shards.binary_search(i).is_err()).collect()
    }

    /// The fields that say what was run and what was found, without timing: equal for an
    /// unsharded sweep and the merge of its shards.
    pub fn verdict(&self) -> serde_json::Value {
        serde_json::json!({
            "scenario": self.scenario,
            "bug": self.bug,
            "crdb_nodes": self.crdb_nodes,
            "from": self.from,
            "count": self.count,
            "seeds": self.seeds,
            "failures": self.failures,
            "coverage": self.coverage,
            "outcomes": self.outcomes,
            "trace_digest": self.trace_digest,
            "simulated_ms": self.simulated_ms,
            "commit": self.commit,
        })
    }
}

impl SweepSummary {
    /// Appends the summary of the seeds that follow this one's (`next.from == from + count`,
    /// same scenario, bug and build, both unsharded): a sweep run in chunks, as a soak under a
    /// time budget runs it.
    ///
    /// # Panics
    /// When `next` does not follow on: a caller's mistake, not input.
    pub fn absorb(&mut self, next: SweepSummary) {
        assert_eq!(next.from, self.from + self.count, "chunks follow on");
        assert_eq!((self.shard_count, next.shard_count), (1, 1), "unsharded chunks");
        assert_eq!((&next.scenario, &next.bug, &next.commit), (&self.scenario, &self.bug, &self.commit));
        let digest = |d: &str| u64::from_str_radix(d, 16).expect("a digest this process made");
        self.trace_digest = format!("{:016x}", digest(&self.trace_digest).wrapping_add(digest(&next.trace_digest)));
        self.count += next.count;
        self.seeds += next.seeds;
        self.failures.extend(next.failures);
        for (mark, n) in next.coverage {
            *self.coverage.entry(mark).or_default() += n;
        }
        for (name, n) in next.outcomes {
            *self.outcomes.entry(name).or_default() += n;
        }
        self.simulated_ms += next.simulated_ms;
        self.simulated_seconds = self.simulated_ms as f64 / 1000.0;
        self.seconds += next.seconds;
        self.shard_seconds += next.shard_seconds;
        self.seeds_per_second = self.seeds as f64 / self.seconds.max(1e-9);
        self.peak_rss_mb = self.peak_rss_mb.max(next.peak_rss_mb);
    }
}

/// What a long sweep over several scenarios (`testbed soak`) ran and found: a sweep summary per
/// scenario, in the order they ran. `merge` takes the soak summaries of shards and merges them
/// scenario by scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakSummary {
    pub soak: Vec<SweepSummary>,
}

/// Why summaries cannot be merged.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MergeError {
    #[error("no summaries to merge")]
    Empty,
    #[error("{path}: {field} is {found}, but the first summary's is {expected}: not shards of one sweep")]
    Mismatch { path: String, field: &'static str, expected: String, found: String },
    #[error("{path}: shard {shard} is also in {other}")]
    Duplicate { path: String, other: String, shard: u64 },
    #[error("{path}: the trace digest {digest:?} is not a hexadecimal number")]
    Digest { path: String, digest: String },
    #[error("{path}: shard {shard} is not one of the {of} shards")]
    NoSuchShard { path: String, shard: u64, of: u64 },
    #[error("{path}: shard {shard} ran {ran} seeds, but it has {expected}")]
    Seeds { path: String, shard: u64, ran: u64, expected: u64 },
    #[error("{path}: seeds {from}..{from}+{count} go past the last seed")]
    Range { path: String, from: u64, count: u64 },
}

/// A trace digest: the wrapping sum of trace hashes, in hex.
pub fn digest(hashes: impl IntoIterator<Item = u64>) -> String {
    format!("{:016x}", hashes.into_iter().fold(0u64, u64::wrapping_add))
}

/// Merges the summaries of shards of one sweep, each named by where it came from (for errors).
/// The result covers the union of their shards; [`SweepSummary::complete`] says whether that
/// is the whole sweep.
///
/// # Errors
/// No summaries; summaries of different sweeps or builds; a shard given twice; a digest that is
/// not hex.
pub fn merge(summaries: &[(String, SweepSummary)]) -> Result<SweepSummary, MergeError> {
    let Some((_, first)) = summaries.first() else {
        return Err(MergeError::Empty);
    };
    let mut owner: BTreeMap<u64, &str> = BTreeMap::new();
    let mut merged = SweepSummary {
        shards: Vec::new(),
        seeds: 0,
        failures: Vec::new(),
        coverage: BTreeMap::new(),
        outcomes: BTreeMap::new(),
        trace_digest: String::new(),
        simulated_ms: 0,
        simulated_seconds: 0.0,
        seconds: 0.0,
        shard_seconds: 0.0,
        seeds_per_second: 0.0,
        peak_rss_mb: 0.0,
        ..first.clone()
    };
    let mut digest_sum = 0u64;
    for (path, s) in summaries {
        let same = |field: &'static str, expected: String, found: String| {
            if expected == found {
                Ok(())
            } else {
                Err(MergeError::Mismatch { path: path.clone(), field, expected, found })
            }
        };
        same("scenario", first.scenario.clone(), s.scenario.clone())?;
        same("bug", format!("{:?}", first.bug), format!("{:?}", s.bug))?;
        same("crdb_nodes", first.crdb_nodes.to_string(), s.crdb_nodes.to_string())?;
        same("from", first.from.to_string(), s.from.to_string())?;
        same("count", first.count.to_string(), s.count.to_string())?;
        same("shard_count", first.shard_count.to_string(), s.shard_count.to_string())?;
        same("commit", first.commit.clone(), s.commit.clone())?;
        if s.from.checked_add(s.count).is_none() {
            return Err(MergeError::Range { path: path.clone(), from: s.from, count: s.count });
        }
        if let Some(&shard) = s.shards.iter().find(|i| **i >= s.shard_count) {
            return Err(MergeError::NoSuchShard { path: path.clone(), shard, of: s.shard_count });
        }
        // A shard's own summary must have run exactly its seeds.
        if let [index] = s.shards.as_slice() {
            let expected = Shard { index: *index, of: s.shard_count }.seeds(s.from, s.count).count() as u64;
            if s.seeds != expected {
                return Err(MergeError::Seeds { path: path.clone(), shard: *index, ran: s.seeds, expected });
            }
        }
        for shard in &s.shards {
            if let Some(other) = owner.insert(*shard, path) {
                return Err(MergeError::Duplicate { path: path.clone(), other: other.to_string(), shard: *shard });
            }
        }
        digest_sum = digest_sum.wrapping_add(
            u64::from_str_radix(&s.trace_digest, 16)
                .map_err(|_| MergeError::Digest { path: path.clone(), digest: s.trace_digest.clone() })?,
        );
        merged.seeds += s.seeds;
        merged.failures.extend(s.failures.iter().cloned());
        for (mark, n) in &s.coverage {
            *merged.coverage.entry(mark.clone()).or_default() += n;
        }
        for (name, n) in &s.outcomes {
            *merged.outcomes.entry(name.clone()).or_default() += n;
        }
        merged.simulated_ms += s.simulated_ms;
        merged.seconds = merged.seconds.max(s.seconds);
        merged.shard_seconds += s.shard_seconds;
        merged.seeds_per_second += s.seeds_per_second;
        merged.peak_rss_mb = merged.peak_rss_mb.max(s.peak_rss_mb);
    }
    merged.shards = owner.into_keys().collect();
    merged.failures.sort_by_key(|f| f.seed);
    merged.trace_digest = digest([digest_sum]);
    merged.simulated_seconds = merged.simulated_ms as f64 / 1000.0;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(shard: Shard, seeds: &[u64], failing: &[u64]) -> SweepSummary {
        SweepSummary {
            scenario: "flash-sale".into(),
            bug: None,
            crdb_nodes: 3,
            from: 10,
            count: 7,
            shard_count: shard.of,
            shards: vec![shard.index],
            seeds: seeds.len() as u64,
            failures: failing
                .iter()
                .map(|s| Failure {
                    seed: *s,
                    invariants: vec!["no-oversell".into()],
                    token: format!("t{s}"),
                    reproduce: format!("r{s}"),
                })
                .collect(),
            coverage: seeds.iter().map(|s| (format!("m{}", s % 2), 1)).fold(BTreeMap::new(), |mut m, (k, v)| {
                *m.entry(k).or_default() += v;
                m
            }),
            outcomes: BTreeMap::new(),
            trace_digest: digest(seeds.iter().map(|s| s.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            simulated_ms: seeds.len() as u64 * 100,
            simulated_seconds: seeds.len() as f64 * 0.1,
            seconds: 2.0,
            shard_seconds: 2.0,
            seeds_per_second: seeds.len() as f64 / 2.0,
            peak_rss_mb: 8.0,
            commit: "abc".into(),
        }
    }

    #[test]
    fn shards_partition_the_seeds() {
        for of in 1..=5 {
            let mut all: Vec<u64> = (0..of).flat_map(|i| Shard { index: i, of }.seeds(10, 7)).collect();
            all.sort_unstable();
            assert_eq!(all, (10..17).collect::<Vec<_>>(), "{of} shards");
        }
        assert_eq!(Shard { index: 1, of: 3 }.seeds(10, 7).collect::<Vec<_>>(), vec![11, 14]);
        assert_eq!(Shard { index: 4, of: 5 }.seeds(0, 3).count(), 0);
    }

    #[test]
    fn shard_values_are_checked() {
        assert_eq!(Shard::parse("2/3"), Ok(Shard { index: 2, of: 3 }));
        assert!(Shard::parse("3/3").unwrap_err().contains("below"));
        assert!(Shard::parse("0/0").unwrap_err().contains("at least 1"));
        assert!(Shard::parse("x/3").unwrap_err().contains("not a number"));
        assert!(Shard::parse("3").unwrap_err().contains("I/N"));
    }

    #[test]
    fn merging_shards_gives_the_whole_sweep() {
        let whole = summary(Shard::WHOLE, &(10..17).collect::<Vec<_>>(), &[11, 14, 16]);
        let of = 3;
        let parts: Vec<(String, SweepSummary)> = (0..of)
            .rev()
            .map(|i| {
                let shard = Shard { index: i, of };
                let seeds: Vec<u64> = shard.seeds(10, 7).collect();
                let failing: Vec<u64> = seeds.iter().copied().filter(|s| [11, 14, 16].contains(s)).collect();
                (format!("s{i}"), summary(shard, &seeds, &failing))
            })
            .collect();
        let merged = merge(&parts).expect("one sweep");
        assert!(merged.complete());
        assert_eq!(merged.verdict(), whole.verdict());
        assert_eq!(merged.seeds_per_second, 3.5);
        assert_eq!(merged.seconds, 2.0);
        assert_eq!(merged.shard_seconds, 6.0);
    }

    #[test]
    fn merging_refuses_duplicates_and_foreign_summaries() {
        let a = summary(Shard { index: 0, of: 2 }, &[10, 12, 14, 16], &[]);
        let mut b = summary(Shard { index: 1, of: 2 }, &[11, 13, 15], &[]);
        let partial = merge(&[("a".into(), a.clone())]).expect("a shard alone merges");
        assert!(!partial.complete());
        assert_eq!(partial.missing(), vec![1]);
        assert!(matches!(
            merge(&[("a".into(), a.clone()), ("a2".into(), a.clone())]),
            Err(MergeError::Duplicate { shard: 0, .. })
        ));
        b.scenario = "ledger-chaos".into();
        let err = merge(&[("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap_err();
        assert!(err.to_string().contains("scenario"), "{err}");
        b.scenario = a.scenario.clone();
        b.commit = "other".into();
        assert!(matches!(
            merge(&[("a".into(), a), ("b".into(), b)]),
            Err(MergeError::Mismatch { field: "commit", .. })
        ));
        assert_eq!(merge(&[]), Err(MergeError::Empty));
        let mut beyond = summary(Shard { index: 1, of: 2 }, &[11, 13, 15], &[]);
        beyond.shards = vec![5];
        assert!(matches!(merge(&[("x".into(), beyond)]), Err(MergeError::NoSuchShard { shard: 5, of: 2, .. })));
        let short = summary(Shard { index: 1, of: 2 }, &[11, 13], &[]);
        assert!(matches!(merge(&[("s".into(), short)]), Err(MergeError::Seeds { ran: 2, expected: 3, .. })));
    }
}
