//! `Alt-Svc` on a listener's TCP responses when it also serves HTTP/3 (SPEC §15):
//! `h3=":PORT"; ma=86400`, built once at start. HTTP/3 responses themselves (Pingora
//! `custom` sessions, see `quic::session`) do not carry it.

use http::header::ALT_SVC;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora_proxy::Session;

/// Adds `value` unless the response already names alternatives (a backend's own
/// `Alt-Svc` wins) or the request came over HTTP/3.
pub fn stamp(
    session: &Session,
    resp: &mut ResponseHeader,
    value: Option<&HeaderValue>,
) -> pingora::Result<()> {
    let Some(value) = value else {
        return Ok(());
    };
    if session.as_downstream().is_custom() || resp.headers.contains_key(ALT_SVC) {
        return Ok(());
    }
    resp.insert_header(ALT_SVC, value.clone())
}
