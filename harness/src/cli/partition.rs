//! `--partition`: one shard of a selection, so that a CI matrix of N jobs runs each
//! scenario exactly once. `count:K/N` deals the selection out in order (the i-th scenario
//! to shard i mod N), evenly; `hash:K/N` puts each scenario by a hash of its path, so a
//! scenario stays in its shard when others are added or removed.

use std::str::FromStr;

/// One shard of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Partition {
    how: Dealing,
    /// 1-based.
    shard: u64,
    of: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dealing {
    Count,
    Hash,
}

impl FromStr for Partition {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || format!("{text:?}: expected hash:K/N or count:K/N, with 1 <= K <= N");
        let (how, shard) = text.split_once(':').ok_or_else(usage)?;
        let how = match how {
            "count" => Dealing::Count,
            "hash" => Dealing::Hash,
            _ => return Err(usage()),
        };
        let (shard, of) = shard.split_once('/').ok_or_else(usage)?;
        let (shard, of): (u64, u64) = (shard.parse().map_err(|_| usage())?, of.parse().map_err(|_| usage())?);
        if shard == 0 || shard > of {
            return Err(usage());
        }
        Ok(Self { how, shard, of })
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.how {
            Dealing::Count => "count",
            Dealing::Hash => "hash",
        };
        write!(f, "{how}:{}/{}", self.shard, self.of)
    }
}

impl Partition {
    /// The items of this shard, in their order; `key` names each item the same way on
    /// every machine (its path, relative to the directory given).
    pub fn keep<T>(&self, items: Vec<T>, key: impl Fn(&T) -> String) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(i, item)| {
                let index = match self.how {
                    Dealing::Count => *i as u64,
                    Dealing::Hash => fnv1a(key(item).as_bytes()),
                };
                index % self.of + 1 == self.shard
            })
            .map(|(_, item)| item)
            .collect()
    }
}

/// FNV-1a, 64 bits: a hash fixed by its definition, so every machine of a CI matrix, and
/// every Rust release, deals the same way (std's hasher promises neither).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For both dealings and several N, the shards are disjoint and together the whole
    /// selection, each in selection order.
    #[test]
    fn the_shards_cover_the_selection_exactly_once() {
        let items: Vec<String> = (0..97).map(|i| format!("dir{}/scenario-{i}.yaml", i % 7)).collect();
        for how in ["count", "hash"] {
            for of in 1..=5 {
                let mut union: Vec<String> = Vec::new();
                for shard in 1..=of {
                    let partition: Partition = format!("{how}:{shard}/{of}").parse().unwrap();
                    let kept = partition.keep(items.clone(), Clone::clone);
                    let mut in_order = kept.clone();
                    in_order.sort_by_key(|k| items.iter().position(|i| i == k));
                    assert_eq!(kept, in_order, "{partition} keeps the selection's order");
                    if how == "count" {
                        let even = items.len() as u64 / of;
                        assert!(
                            (kept.len() as u64).abs_diff(even) <= 1,
                            "{partition}: {} of {}",
                            kept.len(),
                            items.len()
                        );
                    }
                    union.extend(kept);
                }
                union.sort();
                let mut all = items.clone();
                all.sort();
                assert_eq!(union, all, "{how} over {of} shards");
            }
        }
    }

    #[test]
    fn a_hash_shard_does_not_move_when_others_come_and_go() {
        let partition: Partition = "hash:2/3".parse().unwrap();
        let some = vec!["a.yaml".to_owned(), "b.yaml".to_owned(), "c.yaml".to_owned()];
        let more: Vec<String> = some.iter().cloned().chain((0..20).map(|i| format!("new-{i}.yaml"))).collect();
        let before = partition.keep(some.clone(), Clone::clone);
        let after: Vec<String> = partition.keep(more, Clone::clone).into_iter().filter(|k| some.contains(k)).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn malformed_partitions_are_refused_with_the_form() {
        for bad in ["hash", "hash:1", "count:0/3", "count:4/3", "rand:1/2", "hash:a/b", "hash:1/0"] {
            let e = bad.parse::<Partition>().unwrap_err();
            assert!(e.ends_with("expected hash:K/N or count:K/N, with 1 <= K <= N"), "{bad}: {e}");
        }
        assert_eq!("hash:2/3".parse::<Partition>().unwrap().to_string(), "hash:2/3");
    }
}
