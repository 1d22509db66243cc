//! The operator files under `deploy/`: every metric the Grafana dashboard and the Prometheus
//! alert rules read is one that nacre's code registers (a renamed metric must not leave a
//! panel or an alert silently empty). `promtool check rules` and `promtool test rules` run in
//! `.ci/run`.

use nacre_testkit::repo_root;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            files_under(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

/// Every `nacre_…` token in `text`.
fn metric_tokens(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("nacre_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - start);
        if boundary {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The metric names the code registers: `"nacre_…"` string literals in the servers' sources.
fn registered() -> BTreeSet<String> {
    let mut sources = Vec::new();
    for crate_dir in ["registry/src", "gateway/src"] {
        files_under(&repo_root().join(crate_dir), "rs", &mut sources);
    }
    let mut names = BTreeSet::new();
    for file in sources {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for name in metric_tokens(&text) {
            if text.contains(&format!("\"{name}\"")) {
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_read_is_registered() {
    let registered = registered();
    assert!(
        registered.contains("nacre_raft") && registered.contains("nacre_gateway_ring_members"),
        "the source scan found the registrations: {registered:?}"
    );
    let mut files = Vec::new();
    files_under(&repo_root().join("deploy/grafana"), "json", &mut files);
    files_under(&repo_root().join("deploy/prometheus"), "yml", &mut files);
    assert!(files.len() >= 3, "{files:?}");
    let mut missing = Vec::new();
    let mut used = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for token in metric_tokens(&text) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| token.strip_suffix(s).filter(|f| registered.contains(*f)))
                .unwrap_or(&token)
                .to_string();
            used += 1;
            if !registered.contains(&family) {
                missing.push(format!("{}: {token}", file.display()));
            }
        }
    }
    assert!(used > 30, "the files read {used} metrics");
    assert!(
        missing.is_empty(),
        "not registered by the code: {missing:#?}"
    );
}

#[test]
fn the_token_scan_finds_names_and_only_names() {
    let t =
        metric_tokens(r#"rate(nacre_push_sent_total{job="x"}[1m]) / my_nacre_thing + nacre_raft"#);
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        vec!["nacre_push_sent_total", "nacre_raft"]
    );
}
