//! The coordinator's single HTML page: fleet totals, coverage matrix, silent nodes.
//!
//! Self-contained (inline CSS and JS, no external resources). It reads the JSON API
//! with the read token taken from the URL fragment (`/#token=...`).

use axum::response::Html;

/// The page, embedded at build time.
const PAGE: &str = include_str!("page.html");

/// `GET /`: the page. Holds no data and no secret; the browser fetches the API itself.
pub async fn index() -> Html<&'static str> {
    Html(PAGE)
}
