//! nacre's web console: the static page, script and style sheet, embedded in the binary so
//! both tiers (the gateway and every node) serve the same console with nothing to install and
//! no network at run time.
//!
//! The console is a single page written in plain JavaScript modules with no build step and
//! no third-party code (see `docs/architecture.md` for why). It talks only to the HTTP APIs
//! clients and tools already use; nothing here knows about registry state. What the two
//! tiers must agree on is stated once, here: which paths are console assets ([`asset`]), and
//! the headers every asset answer carries ([`HEADERS`]).
//!
//! Assets are public (they hold no data); every API call the page makes carries the
//! operator's token and is checked like any other client's.

/// An embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// Where the console's page is served: the path Nacos serves its console on, so operators
/// find it where they look.
pub const ROOT: &str = "/nacos/";

/// Headers sent with every asset. The page builds its DOM from text nodes only; the policy
/// also forbids inline scripts and foreign origins, so data shown in the console (service
/// names, metadata, config contents) can never run as script. `no-cache` makes a browser
/// revalidate after an upgrade instead of mixing old and new files. Names are lower case, the
/// form both HTTP stacks take them in.
pub const HEADERS: [(&str, &str); 4] = [
    ("cache-control", "no-cache"),
    ("x-content-type-options", "nosniff"),
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("referrer-policy", "no-referrer"),
];

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../assets/index.html"),
};

/// The files under `/nacos/console/`, by name.
const FILES: [(&str, Asset); 3] = [
    (
        "console.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!("../assets/console.js"),
        },
    ),
    (
        "console.css",
        Asset {
            content_type: "text/css; charset=utf-8",
            body: include_bytes!("../assets/console.css"),
        },
    ),
    (
        "diff.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!("../assets/diff.js"),
        },
    ),
];

/// The asset served at `path`, if `path` is one: `/nacos`, `/nacos/` and
/// `/nacos/index.html` give the page, `/nacos/console/<file>` its files. Nothing else
/// matches, so no API path (`/nacos/v1/…`, `/nacos/serverlist`) is ever taken.
pub fn asset(path: &str) -> Option<Asset> {
    match path {
        "/nacos" | "/nacos/" | "/nacos/index.html" => Some(INDEX),
        _ => {
            let name = path.strip_prefix("/nacos/console/")?;
            FILES.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_found_by_path() {
        for p in ["/nacos", "/nacos/", "/nacos/index.html"] {
            let a = asset(p).map(|a| a.content_type);
            assert_eq!(a, Some("text/html; charset=utf-8"), "{p}");
        }
        let js = asset("/nacos/console/console.js").map(|a| a.content_type);
        assert_eq!(js, Some("text/javascript; charset=utf-8"));
        let css = asset("/nacos/console/console.css").map(|a| a.content_type);
        assert_eq!(css, Some("text/css; charset=utf-8"));
    }

    #[test]
    fn no_api_path_or_unknown_name_is_an_asset() {
        for p in [
            "/nacos/v1/ns/instance/list",
            "/nacos/serverlist",
            "/nacos/console/",
            "/nacos/console/../index.html",
            "/nacos/console/console.js/x",
            "/nacos/index.htm",
            "/nacosx",
            "/",
        ] {
            assert!(asset(p).is_none(), "{p}");
        }
    }

    #[test]
    fn the_page_loads_only_embedded_files() {
        let Some(index) = asset(ROOT) else {
            panic!("no page at {ROOT}");
        };
        let html = String::from_utf8_lossy(index.body);
        for src in html
            .split("src=\"")
            .skip(1)
            .chain(html.split("href=\"").skip(1))
        {
            let url = src.split('"').next().unwrap_or("");
            if url.starts_with("data:") || url.starts_with('#') {
                continue; // the empty inline icon (allowed by the policy); in-page links
            }
            assert!(
                asset(url).is_some(),
                "the page refers to {url}, which is not embedded"
            );
        }
        // Inline script would be refused by the policy: the page must have none.
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn header_names_are_lower_case_tokens() {
        for (name, value) in HEADERS {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{name}"
            );
            assert!(value.bytes().all(|b| (0x20..0x7f).contains(&b)), "{value}");
        }
    }
}
