//! Serves the web console's embedded files (see [`nacre_console`]) at `/nacos/`, so a cluster
//! run without a gateway has its console too. The files are public; the API calls the page
//! makes are checked like any client's.

use axum::http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// `GET /nacos/`, `/nacos/index.html`, `/nacos/console/<file>`.
pub async fn asset(uri: Uri) -> Response {
    let Some(asset) = nacre_console::asset(uri.path()) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut r = asset.body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // The shared table's names are lower-case tokens and its values visible ASCII (tested in
    // nacre-console), which is all `from_static` asks.
    for (name, value) in nacre_console::HEADERS {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    r
}
