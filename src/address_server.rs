//! `nacre address-server`: a members file served as an address-server endpoint
//! (`GET /nacos/serverlist`) for registry nodes (`--members-endpoint`) and gateways
//! (`--upstreams-endpoint`) to follow. It holds reads as [`nacre_config::serverlist`] states
//! (rule E2), so an edit of the file reaches every follower as soon as this server has read it
//! (every `--interval-ms`), not one polling interval of each follower later. A plain `GET`
//! gets the list in the Nacos format, so Nacos clients and tools can use it too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use nacre_config::members::{Discovery, MemberSource};
use nacre_config::serverlist::{self, Hold};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Arguments of `nacre address-server`.
#[derive(Debug, clap::Args)]
pub struct AddressServerArgs {
    /// Where to listen.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The member list, in Nacos's cluster.conf format (one host:port a line, # comments).
    #[arg(long)]
    pub members_file: PathBuf,
    /// How often the file is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
}

struct Served {
    members: watch::Receiver<Vec<String>>,
    stop: CancellationToken,
}

/// Serves until `shutdown` fires.
pub async fn run(args: AddressServerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let discovery = Discovery::start(
        MemberSource::File(args.members_file.clone()),
        Duration::from_millis(args.interval_ms),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(listen = %args.listen, file = %args.members_file.display(), "address server serving");
    let served = Arc::new(Served {
        members: discovery.subscribe(),
        stop: shutdown.clone(),
    });
    let app = axum::Router::new()
        .route(serverlist::PATH, axum::routing::get(list))
        .with_state(served);
    let stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("serving the address-server endpoint")?;
    discovery.stopped().await;
    Ok(())
}

/// The list body and its digest.
fn answer(members: &[String]) -> (String, String) {
    let body = serverlist::body(members);
    let digest = serverlist::digest(&body);
    (body, digest)
}

/// `GET /nacos/serverlist`, held when asked (rule E2).
async fn list(State(served): State<Arc<Served>>, uri: Uri, headers: HeaderMap) -> Response {
    let mut rx = served.members.clone();
    // Only changes from now on wake this read.
    rx.mark_unchanged();
    let asked = headers
        .get(serverlist::DIGEST_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Some(hold) = Hold::of(uri.query(), asked) {
        let (_, current) = answer(&rx.borrow());
        if !hold.answer_now(&current) {
            tokio::select! {
                _ = rx.changed() => {}
                () = tokio::time::sleep(hold.wait) => {}
                () = served.stop.cancelled() => {}
            }
        }
    }
    let (body, digest) = answer(&rx.borrow());
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&digest) {
        h.insert(serverlist::DIGEST_HEADER, v);
    }
    r
}
