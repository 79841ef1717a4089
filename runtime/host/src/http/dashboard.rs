//! The dashboard: one page, its script and its style sheet, built into the binary and served on
//! the control plane's listener. The files hold no data: the script reads the admin API and
//! `/metrics` with the admin token, which the page takes from its URL's fragment (a browser
//! never sends a fragment), so the dashboard shows nothing the admin API does not already serve.

use super::error::HttpResponse;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;

const PAGE: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/dashboard.js");
const STYLE: &str = include_str!("../dashboard/dashboard.css");

/// No inline code, no other origin: the page's script and style come from these files, and it
/// talks to this host only.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The dashboard's file at `path`, if it is one of them.
pub(super) fn file(path: &str) -> Option<HttpResponse> {
    let (body, content_type) = match path {
        "/dashboard" | "/dashboard/" => (PAGE, "text/html; charset=utf-8"),
        "/dashboard/dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/dashboard/dashboard.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(POLICY));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Some(response)
}
