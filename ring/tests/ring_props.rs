//! Properties the cluster relies on: keys spread evenly, and membership changes move only the
//! keys they must. Keys and addresses are generated from a proptest-chosen seed rather than as
//! proptest collections, so a case with 20,000 keys stays cheap and shrinking stays meaningful
//! (it shrinks the member set, which is what a failure is about).

use std::collections::BTreeMap;

use nacre_ring::{Members, Ring, ServiceKey};
use proptest::prelude::*;

const KEYS: usize = 20_000;

/// splitmix64: tiny, deterministic, and good enough to spread test keys.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn word(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_.";
        (0..len)
            .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }
}

/// Keys shaped like real traffic: mostly default namespace and group with `svc-{i}` names,
/// mixed with other namespaces, groups and arbitrary names.
fn keys(seed: u64) -> Vec<ServiceKey> {
    let mut mix = Mix(seed);
    let namespaces = ["public".to_owned(), "dev".to_owned(), mix.word(12)];
    let groups = ["DEFAULT_GROUP".to_owned(), "G1".to_owned(), mix.word(6)];
    (0..KEYS)
        .map(|i| {
            let r = mix.next();
            let namespace = &namespaces[(r % 3) as usize];
            let group = &groups[((r >> 8) % 3) as usize];
            let service = if (r >> 16) & 1 == 0 {
                format!("svc-{i}")
            } else {
                let len = 3 + ((r >> 24) % 20) as usize;
                mix.word(len)
            };
            ServiceKey::new(namespace.as_str(), group.as_str(), service)
        })
        .collect()
}

/// `n` distinct, realistic addresses, in one of three shapes: neighbouring ports on one host
/// (the worst case for a weak hash), neighbouring IPs, or arbitrary hosts and ports.
fn addresses(shape: u8, seed: u64, n: usize) -> Vec<String> {
    let mut mix = Mix(seed);
    let mut out = Vec::new();
    while out.len() < n {
        let r = mix.next();
        let address = match shape % 3 {
            0 => format!("127.0.0.1:{}", 8848 + (seed % 1000) as usize + out.len()),
            1 => format!("10.0.0.{}:8848", 1 + (seed % 200) as usize + out.len()),
            _ => format!(
                "{}.{}.{}.{}:{}",
                r % 256,
                (r >> 8) % 256,
                (r >> 16) % 256,
                (r >> 24) % 256,
                1024 + (r >> 32) % 60_000
            ),
        };
        if !out.contains(&address) {
            out.push(address);
        }
    }
    out
}

fn owners<'r>(ring: &'r Ring, keys: &[ServiceKey]) -> Vec<&'r str> {
    keys.iter()
        .map(|k| ring.owner(k).expect("non-empty ring"))
        .collect()
}

/// Largest distance of any member's key count from the mean, as a fraction of the mean.
fn max_deviation(ring: &Ring, keys: &[ServiceKey]) -> f64 {
    let mut counts: BTreeMap<&str, usize> =
        ring.members().iter().map(|m| (m.as_str(), 0)).collect();
    for owner in owners(ring, keys) {
        *counts.get_mut(owner).expect("owner is a member") += 1;
    }
    let mean = keys.len() as f64 / ring.len() as f64;
    counts
        .values()
        .map(|&c| (c as f64 - mean).abs() / mean)
        .fold(0.0, f64::max)
}

/// A fixed seed: with 2048 virtual nodes the balance bound holds with a wide margin for
/// almost every member set, but a random seed could still, once in thousands of runs, draw one
/// beyond it and fail CI for no change of ours.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6e61_6372_6500),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn three_members_share_keys_within_ten_percent(shape in 0u8..3, addr_seed: u64, key_seed: u64) {
        let ring = Ring::new(&Members::new(addresses(shape, addr_seed, 3)));
        let keys = keys(key_seed);
        let dev = max_deviation(&ring, &keys);
        prop_assert!(dev <= 0.10, "max deviation {:.1} % for {}", dev * 100.0, ring.members());
    }

    #[test]
    fn a_joining_member_takes_keys_only_for_itself(shape in 0u8..3, addr_seed: u64, key_seed: u64) {
        let addrs = addresses(shape, addr_seed, 4);
        let before = Ring::new(&Members::new(&addrs[..3]));
        let after = Ring::new(&Members::new(&addrs));
        let keys = keys(key_seed);
        let mut moved = 0;
        for (old, new) in owners(&before, &keys).into_iter().zip(owners(&after, &keys)) {
            if old != new {
                moved += 1;
                prop_assert_eq!(new, addrs[3].as_str());
            }
        }
        let fraction = moved as f64 / keys.len() as f64;
        prop_assert!(fraction <= 0.30, "{:.1} % of keys moved", fraction * 100.0);
    }

    #[test]
    fn a_leaving_member_gives_up_only_its_own_keys(
        shape in 0u8..3,
        addr_seed: u64,
        key_seed: u64,
        n in 2usize..6,
        leaver in any::<prop::sample::Index>(),
    ) {
        let addrs = addresses(shape, addr_seed, n);
        let gone = addrs[leaver.index(n)].as_str();
        let before = Ring::new(&Members::new(&addrs));
        let after = Ring::new(&Members::new(addrs.iter().filter(|a| *a != gone)));
        let keys = keys(key_seed);
        for key in &keys {
            let old = before.owner(key).expect("non-empty ring");
            let new = after.owner(key).expect("non-empty ring");
            if old == gone {
                // Its keys go where the fallback order already pointed.
                prop_assert_eq!(Some(new), before.replicas(key).get(1).copied());
            } else {
                prop_assert_eq!(old, new);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The fallback order is usable after any number of failures: dropping any subset of
    /// members hands each key to the first survivor in its replica list.
    #[test]
    fn replicas_predict_the_owner_after_any_removal(
        shape in 0u8..3,
        addr_seed: u64,
        key_seed: u64,
        n in 1usize..7,
        dropped in any::<u8>(),
    ) {
        let addrs = addresses(shape, addr_seed, n);
        let ring = Ring::new(&Members::new(&addrs));
        let survivors: Vec<&String> =
            addrs.iter().enumerate().filter(|(i, _)| dropped & (1 << i) == 0).map(|(_, a)| a).collect();
        let smaller = Ring::new(&Members::new(&survivors));
        for key in keys(key_seed).iter().take(2_000) {
            let replicas = ring.replicas(key);
            prop_assert_eq!(replicas.len(), n);
            prop_assert_eq!(Some(replicas[0]), ring.owner(key));
            let expected = replicas.into_iter().find(|r| survivors.iter().any(|s| s == r));
            prop_assert_eq!(smaller.owner(key), expected);
        }
    }
}

/// Prints balance and movement figures for a few fixed member sets; run with
/// `cargo test -p nacre-ring --test ring_props -- --ignored --nocapture` when tuning VNODES.
#[test]
#[ignore]
fn report() {
    let fixed = keys(42);
    for (name, addrs) in [
        ("127.0.0.1:8848-8850", addresses(0, 0, 4)),
        ("10.0.0.1-3:8848", addresses(1, 0, 4)),
        ("arbitrary A", addresses(2, 1, 4)),
        ("arbitrary B", addresses(2, 2, 4)),
        ("arbitrary C", addresses(2, 3, 4)),
    ] {
        let three = Ring::new(&Members::new(&addrs[..3]));
        let four = Ring::new(&Members::new(&addrs));
        let moved = owners(&three, &fixed)
            .into_iter()
            .zip(owners(&four, &fixed))
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "{name:>22}: 3 members max dev {:>5.2} %, 4 members max dev {:>5.2} %, join moves {:>5.2} %",
            max_deviation(&three, &fixed) * 100.0,
            max_deviation(&four, &fixed) * 100.0,
            moved as f64 * 100.0 / fixed.len() as f64,
        );
    }
    // Over many random 3-member sets (and fresh keys each), how bad does it get?
    let sets: u64 = std::env::var("RING_REPORT_SETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut devs: Vec<f64> = (0..sets)
        .map(|seed| {
            let ring = Ring::new(&Members::new(addresses((seed % 3) as u8, seed * 7919, 3)));
            max_deviation(&ring, &keys(seed ^ 0xABCD))
        })
        .collect();
    devs.sort_by(f64::total_cmp);
    let pct = |p: f64| devs[((devs.len() - 1) as f64 * p) as usize] * 100.0;
    println!(
        "{sets} random 3-member sets: max dev mean {:.2} %, p99 {:.2} %, p99.9 {:.2} %, worst {:.2} %, over 10 %: {}",
        devs.iter().sum::<f64>() * 100.0 / sets as f64,
        pct(0.99),
        pct(0.999),
        pct(1.0),
        devs.iter().filter(|d| **d > 0.10).count(),
    );
}
