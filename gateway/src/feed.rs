//! Following one node's change feed (`/nacre/internal/changes`): a held read returns the
//! services changed after a cursor, each invalidated in the list cache, and the configs
//! changed, whose md5s go to the table parked listeners wait on.
//!
//! A reset (the node restarted, or the gateway fell too far behind) and a lost feed both reset
//! the whole cache: the gateway cannot know what it missed. While any feed is not followed the
//! proxy bypasses the cache (see [`crate::upstreams::View::feeds_ok`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use nacre_ring::wire::{FeedPage, CHANGES_PATH, SECRET_HEADER};
use nacre_ring::ServiceKey;
use tokio_util::sync::CancellationToken;

use crate::upstreams::Upstream;
use crate::Shared;

/// Pause before reconnecting a lost feed.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Pause after a page that carried changes, before the next read. A node taking thousands of
/// writes a second would otherwise answer one feed read per change (each a request on both
/// sides, a fifth of a bulk registration's CPU); this way its changes come in pages, at most
/// this much later. The gateway's own writes never wait for it: they invalidate at once.
const LINGER: Duration = Duration::from_millis(5);

/// Follows `up`'s feed until `stop` is cancelled.
pub async fn follow(
    shared: Arc<Shared>,
    client: reqwest::Client,
    up: Arc<Upstream>,
    stop: CancellationToken,
) {
    let wait_ms = shared.settings.feed_wait_ms;
    let url = format!("http://{}{CHANGES_PATH}", up.addr);
    let secret = shared.settings.cluster_secret.clone().unwrap_or_default();
    let (mut epoch, mut cursor) = (0u64, 0u64);
    loop {
        let read = client
            .get(&url)
            .header(SECRET_HEADER, &secret)
            .query(&[("epoch", epoch), ("cursor", cursor), ("wait_ms", wait_ms)])
            .timeout(Duration::from_millis(wait_ms) + Duration::from_secs(3))
            .send();
        let page = tokio::select! {
            _ = stop.cancelled() => break,
            r = read => match r {
                Ok(resp) if resp.status().is_success() => resp.json::<FeedPage>().await.map_err(|e| e.to_string()),
                Ok(resp) => Err(format!("status {}", resp.status())),
                Err(e) => Err(e.to_string()),
            },
        };
        match page {
            Ok(page) => {
                if page.reset {
                    if epoch != 0 {
                        tracing::info!(upstream = %up.name, "change feed restarted: cache reset");
                    }
                    shared.reset_cache();
                }
                shared.config_md5s.learn(&page.configs);
                let unique: HashSet<&ServiceKey> = page.keys.iter().collect();
                for key in unique {
                    if shared.cache.invalidate(key) {
                        shared.metrics.invalidations_feed.inc();
                    }
                }
                if page.newest_ms > 0 {
                    shared
                        .metrics
                        .set_feed_lag(&up.name, crate::now_ms().saturating_sub(page.newest_ms));
                }
                epoch = page.epoch;
                cursor = page.cursor;
                up.set_feed_ok(true);
                if !page.keys.is_empty() || !page.configs.is_empty() {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(LINGER) => {}
                    }
                }
            }
            Err(e) => {
                if up.set_feed_ok(false) {
                    tracing::warn!(upstream = %up.name, error = %e, "change feed lost: cache reset");
                    shared.reset_cache();
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
    up.set_feed_ok(false);
}
