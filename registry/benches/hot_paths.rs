//! Criterion benchmarks of the registry's per-request hot paths, at realistic sizes.
//!
//! Run with `cargo bench -p nacre-registry --bench hot_paths`. Sizes follow what a busy node
//! sees: services of tens to a thousand instances, instances carrying a few metadata keys, and
//! a ten-thousand-instance expiry sweep every few seconds; and what auth adds to a request.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use nacre_registry::api::params::decode_form;
use nacre_registry::api::render::{list_json, ListOptions};
use nacre_registry::distro::{BeatOutcome, EphemeralStore};
use nacre_registry::naming::model::{Instance, InstanceKey, Metadata, ServiceMeta};
use nacre_registry::naming::select::{parse_clusters, select};
use nacre_registry::node::ServiceView;
use nacre_ring::ServiceKey;

/// A fixed "now" so that results do not depend on the wall clock.
const NOW_MS: u64 = 1_700_000_000_000;

/// Clusters instances are spread over (round robin).
const CLUSTERS: [&str; 4] = ["DEFAULT", "hz-a", "hz-b", "sh-a"];

/// A typical Java client registration (`POST /nacos/v1/ns/instance`) as a query string, with
/// `URLEncoder`-style percent-encoded JSON metadata.
const JAVA_REGISTER_QUERY: &str = "namespaceId=public\
&serviceName=DEFAULT_GROUP%40%40orders-service\
&groupName=DEFAULT_GROUP\
&clusterName=DEFAULT\
&ip=10.12.34.56\
&port=8080\
&weight=1.0\
&enable=true\
&healthy=true\
&ephemeral=true\
&metadata=%7B%22preserved.register.source%22%3A%22SPRING_CLOUD%22%2C%22version%22%3A%221.4.2%22%2C%22zone%22%3A%22cn-hangzhou-a%22%7D\
&app=orders";

fn service_key(n: usize) -> ServiceKey {
    ServiceKey::new("public", "DEFAULT_GROUP", format!("orders-service-{n}"))
}

fn metadata(i: usize) -> Metadata {
    [
        ("preserved.register.source", "SPRING_CLOUD".to_string()),
        ("version", format!("1.4.{}", i % 7)),
        ("zone", format!("cn-hangzhou-{}", ["a", "b", "c"][i % 3])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Instance `i` of a service: a distinct address, a cluster chosen round robin, roughly 90%
/// healthy, all enabled.
fn instance(service: &ServiceKey, i: usize) -> Instance {
    let ip = format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
    let cluster = CLUSTERS[i % CLUSTERS.len()];
    Instance {
        instance_id: format!("{ip}#8080#{cluster}#{}", service.grouped()).into(),
        ip: ip.into(),
        port: 8080,
        cluster: cluster.into(),
        weight: 1.0,
        healthy: i % 10 != 9,
        enabled: true,
        ephemeral: true,
        metadata: metadata(i).into(),
        app: "orders".into(),
        last_beat_ms: NOW_MS,
        marked: false,
    }
}

fn instances(service: &ServiceKey, n: usize) -> Vec<Instance> {
    (0..n).map(|i| instance(service, i)).collect()
}

/// A store holding `services` services of `per_service` instances each, all beaten at `NOW_MS`.
fn store(services: usize, per_service: usize) -> EphemeralStore {
    let store = EphemeralStore::new();
    for s in 0..services {
        let key = service_key(s);
        for inst in instances(&key, per_service) {
            store.register(&key, inst, NOW_MS);
        }
    }
    store
}

fn bench_list_json(c: &mut Criterion) {
    let key = service_key(0);
    // What a Java 1.x client sends: grouped `dom`, no cluster filter, all instances.
    let opts = ListOptions {
        clusters: "",
        healthy_only: false,
        grouped_dom: true,
        cache_millis: 10_000,
        env: "",
        now_ms: NOW_MS,
    };
    let mut group = c.benchmark_group("render/list_json");
    for n in [10usize, 100, 1000] {
        let view = ServiceView {
            meta: ServiceMeta::default(),
            instances: instances(&key, n),
        };
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &view, |b, view| {
            b.iter(|| list_json(black_box(&key), Some(black_box(view)), opts))
        });
    }
    group.finish();
}

fn bench_select(c: &mut Criterion) {
    let key = service_key(0);
    // Two of the four clusters: half the instances match.
    let clusters = parse_clusters("DEFAULT,hz-a");
    let mut group = c.benchmark_group("naming/select");
    for n in [100usize, 1000] {
        let all = instances(&key, n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &all, |b, all| {
            b.iter(|| select(black_box(all), black_box(&clusters), false, 0.0))
        });
    }
    group.finish();
}

fn bench_ephemeral_store(c: &mut Criterion) {
    let mut group = c.benchmark_group("distro/store");

    // Registering a new instance into a service that already holds 100 (the lookup scans the
    // service; the new instance is appended). A fresh store per batch keeps the size fixed.
    let key = service_key(0);
    group.bench_function("register_new/100", |b| {
        b.iter_batched(
            || (store(1, 100), instance(&key, 100)),
            |(store, inst)| {
                store.register(black_box(&key), inst, NOW_MS);
                store
            },
            BatchSize::SmallInput,
        )
    });

    // A beat on an existing instance halfway through a 100-instance service, in a store of
    // 100 such services.
    let beats = store(100, 100);
    let beat_key = service_key(50);
    let target = instance(&beat_key, 50);
    let id = InstanceKey {
        ip: target.ip.clone(),
        port: target.port,
        cluster: target.cluster.clone(),
    };
    assert!(matches!(
        beats.beat(&beat_key, &id, NOW_MS),
        BeatOutcome::Alive { .. }
    ));
    group.bench_function("beat/100", |b| {
        b.iter(|| beats.beat(black_box(&beat_key), black_box(&id), NOW_MS + 5_000))
    });

    // The expiry sweep's tick when nothing is due: 10k instances (100 services × 100) and
    // 1M (100k services × 10). The first tick walks every instance and records each service's
    // nearest deadline (rule E5); the ticks measured here only compare those times.
    for (services, per) in [(100, 100), (100_000, 10)] {
        let sweeps = store(services, per);
        let n = services * per;
        assert_eq!(sweeps.counts(), (services, n));
        assert!(sweeps.sweep(NOW_MS + 1_000).is_empty());
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("sweep/{n}"), |b| {
            b.iter(|| {
                let expired = sweeps.sweep(black_box(NOW_MS + 1_000));
                debug_assert!(expired.is_empty());
                expired
            })
        });
    }
    group.finish();
}

fn bench_decode_form(c: &mut Criterion) {
    let raw = JAVA_REGISTER_QUERY.as_bytes();
    let mut check = Vec::new();
    decode_form(raw, &mut check).expect("the sample query decodes");
    assert_eq!(check.len(), 12);
    let mut group = c.benchmark_group("api/decode_form");
    group.throughput(Throughput::Bytes(raw.len() as u64));
    group.bench_function(BenchmarkId::new("java_register", raw.len()), |b| {
        b.iter(|| {
            let mut pairs = Vec::new();
            let ok = decode_form(black_box(raw), &mut pairs).is_ok();
            (ok, pairs)
        })
    });
    group.finish();
}

/// What auth costs per request: checking a token (every call of a logged-in client), checking
/// a remembered password (the npm client sends it with every call), and a login (an Argon2id
/// verification; once per token lifetime for Java and Python clients).
fn bench_auth(c: &mut Criterion) {
    use nacre_registry::auth::{password, token};
    let key = token::key_bytes(&token::new_key()).unwrap_or_default();
    let t = token::sign(
        &key,
        &token::Claims {
            user: "orders-service".into(),
            generation: 3,
            expires_s: u64::MAX / 2,
        },
    );
    let hash = password::hash("a-long-enough-password").unwrap_or_default();
    let proven = password::Verified::default();
    proven.remember("orders-service", "a-long-enough-password", 3, 0);
    let mut group = c.benchmark_group("auth");
    group.bench_function("token_check", |b| {
        b.iter(|| token::verify(black_box(&key), black_box(&t), black_box(1)))
    });
    group.bench_function("remembered_password_check", |b| {
        b.iter(|| {
            proven.known(
                black_box("orders-service"),
                black_box("a-long-enough-password"),
                3,
                1,
            )
        })
    });
    group.sample_size(10);
    group.bench_function("login_argon2id_verify", |b| {
        b.iter(|| password::check(black_box("a-long-enough-password"), black_box(&hash)))
    });
    group.finish();
}

/// The owner lookup every beat, write and routed list makes (gateway and node), over 1,000
/// services of a 3-member ring.
fn bench_ring_owner(c: &mut Criterion) {
    let ring = nacre_ring::Ring::new(&nacre_ring::Members::new([
        "127.0.0.1:8848",
        "127.0.0.1:8849",
        "127.0.0.1:8850",
    ]));
    let keys: Vec<ServiceKey> = (0..1000).map(service_key).collect();
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("owner/1000_keys", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(ring.owner(black_box(key)));
            }
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_ring_owner,
    bench_list_json,
    bench_select,
    bench_ephemeral_store,
    bench_decode_form,
    bench_auth
);
criterion_main!(benches);
