//! Plain HTTP answers for the admin and metrics listeners (not the proxy path): sized,
//! never cached.

use http::Response;

/// A complete response; `content_type` is sent only with a body.
pub fn respond(status: http::StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut builder = Response::builder()
        .status(status)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store");
    if !body.is_empty() {
        builder = builder.header(http::header::CONTENT_TYPE, content_type);
    }
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}
