//! `X-Client-Country` to backends (SPEC §13): with `server.geoip`, every request to a
//! backend carries the client's country (ISO code, empty when unknown); a client-sent
//! one is always replaced.

use super::ctx::RequestCtx;
use pingora::http::RequestHeader;

pub const HEADER: &str = "x-client-country";

pub fn forward(req: &mut RequestHeader, ctx: &RequestCtx) -> pingora::Result<()> {
    if ctx.runtime.as_ref().is_none_or(|rt| rt.geoip.is_none()) {
        return Ok(());
    }
    req.remove_header(HEADER);
    let code = ctx.country.as_ref().map_or("", |c| c.as_str()).to_string();
    req.insert_header(HEADER, code)
}
