//! Rendezvous (highest-random-weight) hashing: every edge that knows the same members ranks them
//! the same way for a key, with no coordination. When a member leaves, only the keys it ranked
//! first move (each to its own runner-up); the others keep their member.
//!
//! The weights come from XXH3, a specified hash, so every edge — whatever its build — agrees;
//! std's `DefaultHasher` promises no such stability.
use twox_hash::XxHash3_64;

/// A member's identity folded into the seed its weights are drawn with, computed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seed(u64);

impl Seed {
    pub(crate) fn of(member: &str) -> Self {
        Self(XxHash3_64::oneshot(member.as_bytes()))
    }
}

fn weight(seed: Seed, key: &[u8]) -> u64 {
    XxHash3_64::oneshot_with_seed(seed.0, key)
}

/// The members' indices, best first, for `key`. Equal weights (vanishingly rare) fall back to the
/// members' order, which callers keep sorted, so the ranking is total.
pub(crate) fn rank(seeds: &[Seed], key: &[u8]) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = seeds
        .iter()
        .enumerate()
        .map(|(i, seed)| (weight(*seed, key), i))
        .collect();
    order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    order.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(members: &[&str]) -> Vec<Seed> {
        members.iter().map(|m| Seed::of(m)).collect()
    }

    fn first(members: &[&str], key: &str) -> String {
        members[rank(&seeds(members), key.as_bytes())[0]].to_owned()
    }

    /// Computed with the reference implementation (Python's `xxhash`, over the C library):
    /// `xxh3_64_intdigest(key, seed=xxh3_64_intdigest(member))`.
    const PINNED: u64 = 14_239_464_934_858_927_203;
    const PINNED_ORDER: [usize; 4] = [3, 0, 2, 1];

    const MEMBERS: [&str; 4] = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080"];

    #[test]
    fn the_ranking_is_a_permutation_and_stable() {
        let order = rank(&seeds(&MEMBERS), b"www.example.com/index.html");
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3]);
        assert_eq!(order, rank(&seeds(&MEMBERS), b"www.example.com/index.html"));
    }

    #[test]
    fn weights_are_pinned() {
        // Edges running different builds (during a rollout) must agree, so the weights may never
        // change: they are XXH3's, fixed by its specification.
        assert_eq!(weight(Seed::of("10.0.0.1:8080"), b"www.example.com\n/a?"), PINNED);
        assert_eq!(rank(&seeds(&MEMBERS), b"www.example.com\n/a?"), PINNED_ORDER);
    }

    #[test]
    fn the_members_order_does_not_matter() {
        let reversed: Vec<&str> = MEMBERS.iter().rev().copied().collect();
        for i in 0..200 {
            let key = format!("host/object-{i}");
            assert_eq!(first(&MEMBERS, &key), first(&reversed, &key), "{key}");
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let keys = 20_000;
        let mut counts = [0_usize; 4];
        let seeds = seeds(&MEMBERS);
        for i in 0..keys {
            counts[rank(&seeds, format!("www.example.com/assets/{i}.js").as_bytes())[0]] += 1;
        }
        // 5,000 expected each; a binomial's standard deviation here is about 61, so ±10 % is
        // more than 8 of them: failing means a real bias, not bad luck.
        for (member, count) in MEMBERS.iter().zip(counts) {
            assert!(
                (4_500..=5_500).contains(&count),
                "{member}: {count} of {keys} ({counts:?})"
            );
        }
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_keys_to_their_runner_up() {
        let remaining = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.4:8080"];
        let (all, left) = (seeds(&MEMBERS), seeds(&remaining));
        let mut moved = 0;
        for i in 0..5_000 {
            let key = format!("www.example.com/{i}");
            let before = rank(&all, key.as_bytes());
            let after = remaining[rank(&left, key.as_bytes())[0]];
            if MEMBERS[before[0]] == "10.0.0.3:8080" {
                moved += 1;
                assert_eq!(after, MEMBERS[before[1]], "{key} goes to its runner-up");
            } else {
                assert_eq!(after, MEMBERS[before[0]], "{key} stays where it was");
            }
        }
        assert!((1_000..=1_500).contains(&moved), "about a quarter moved: {moved}");
    }

    #[test]
    fn a_member_joining_takes_keys_only_for_itself() {
        let fewer = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"];
        for i in 0..2_000 {
            let key = format!("www.example.com/{i}");
            let (before, after) = (first(&fewer, &key), first(&MEMBERS, &key));
            assert!(
                after == before || after == "10.0.0.4:8080",
                "{key}: {before} -> {after}"
            );
        }
    }

    #[test]
    fn no_members_rank_nothing() {
        assert!(rank(&[], b"key").is_empty());
    }
}
