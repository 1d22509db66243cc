//! Property tests of the member-list parsers: `cluster.conf` files, address-server bodies, the
//! `--members` flag and DNS targets come from files and endpoints nacre does not control.
//! Whatever they hold, parsing ends in a list or a typed error, never a panic, and what it
//! accepts is a list of `host:port` addresses.

use nacre_config::members::{
    parse_address, parse_cluster_conf, parse_dns_target, parse_members_flag, parse_server_list,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text biased towards what member lists contain: digits, dots, colons, brackets, newlines,
/// comments and separators.
fn member_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[0-9]{1,3}",
        2 => prop::sample::select(vec![".", ":", ",", "\n", "\r\n", "#", " ", "[", "]", "::1"]).prop_map(str::to_string),
        1 => "[a-z.-]{1,8}",
        1 => ".{0,4}",
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn well_formed(addrs: &[String]) -> bool {
    addrs.iter().all(|a| {
        a.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn member_parsers_never_panic_and_accept_only_addresses(raw in member_text()) {
        if let Ok(a) = parse_cluster_conf(&raw) {
            prop_assert!(well_formed(&a), "{:?} from {:?}", a, raw);
        }
        if let Ok(a) = parse_server_list(&raw) {
            prop_assert!(well_formed(&a), "{:?} from {:?}", a, raw);
        }
        if let Ok(a) = parse_members_flag(&raw) {
            prop_assert!(well_formed(&a), "{:?} from {:?}", a, raw);
        }
        if let Ok(a) = parse_address(&raw) {
            prop_assert!(well_formed(std::slice::from_ref(&a)), "{:?} from {:?}", a, raw);
        }
        let _ = parse_dns_target(&raw);
    }

    #[test]
    fn member_parsers_never_panic_on_any_text(raw in any::<String>()) {
        let _ = parse_cluster_conf(&raw);
        let _ = parse_server_list(&raw);
        let _ = parse_members_flag(&raw);
        let _ = parse_address(&raw);
        let _ = parse_dns_target(&raw);
    }
}
