//! Error and redirect answers written by Switchyard itself: short text/plain bodies,
//! always with X-Request-Id (SPEC §4, §9), and the mapping from proxy errors to codes.

use super::admission::Answer;
use super::headers::set_request_id;
use crate::observe::refusal::Reason;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorSource, ErrorType};
use pingora_proxy::Session;

/// The statuses Switchyard answers itself and their reasons: `reason` for the text,
/// `body` for the whole body (`"<status> <reason>\n"`), compiled in for these statuses.
macro_rules! answers {
    ($($code:literal => $text:literal),* $(,)?) => {
        #[cfg(test)]
        fn reason(status: u16) -> &'static str {
            match status {
                $($code => $text,)*
                _ => "error",
            }
        }

        fn body(status: u16) -> Bytes {
            match status {
                $($code => Bytes::from_static(concat!(stringify!($code), " ", $text, "\n").as_bytes()),)*
                _ => Bytes::from(format!("{status} error\n")),
            }
        }
    };
}

answers! {
    400 => "bad request",
    403 => "forbidden",
    404 => "no route for this request",
    408 => "request timeout",
    413 => "content too large",
    429 => "too many requests",
    431 => "request header fields too large",
    501 => "not implemented",
    500 => "internal error",
    502 => "backend failed",
    503 => "no backend available",
    504 => "backend timed out",
}

const TEXT_PLAIN_UTF8: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Writes an admission answer.
pub async fn answer(
    session: &mut Session,
    answer: Answer,
    request_id: &str,
) -> pingora::Result<()> {
    match answer {
        Answer::Status(status) => respond(session, status, request_id).await,
        Answer::Close(status) => {
            session.set_keepalive(None);
            respond(session, status, request_id).await
        }
        Answer::TooMany { retry_after } => too_many(session, retry_after, request_id).await,
        Answer::Redirect(location) => redirect(session, &location, request_id).await,
        Answer::Text(body) => text(session, body, request_id).await,
    }
}

/// Writes a complete error answer.
pub async fn respond(session: &mut Session, status: u16, request_id: &str) -> pingora::Result<()> {
    respond_with(session, status, request_id, None, None).await
}

/// 429 with `Retry-After` in whole seconds.
pub async fn too_many(
    session: &mut Session,
    retry_after: u64,
    request_id: &str,
) -> pingora::Result<()> {
    respond_with(session, 429, request_id, Some(retry_after), None).await
}

async fn respond_with(
    session: &mut Session,
    status: u16,
    request_id: &str,
    retry_after: Option<u64>,
    x_cache: Option<&'static str>,
) -> pingora::Result<()> {
    let body = body(status);
    let mut resp = ResponseHeader::build(status, Some(6))?;
    if let Some(word) = x_cache {
        resp.insert_header(super::cache::X_CACHE, word)?;
    }
    if let Some(secs) = retry_after {
        resp.insert_header(http::header::RETRY_AFTER, secs)?;
    }
    resp.insert_header(http::header::CONTENT_TYPE, TEXT_PLAIN_UTF8)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    set_request_id(&mut resp, request_id)?;
    send(session, resp, Some(body)).await
}

/// 200 with a text/plain body Switchyard answers itself (ACME HTTP-01 key authorizations).
pub async fn text(session: &mut Session, body: String, request_id: &str) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(200, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    set_request_id(&mut resp, request_id)?;
    send(session, resp, Some(Bytes::from(body))).await
}

/// 308 to the https:// URL of this request.
pub async fn redirect(
    session: &mut Session,
    location: &str,
    request_id: &str,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(308, Some(4))?;
    resp.insert_header(http::header::LOCATION, location)?;
    resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
    set_request_id(&mut resp, request_id)?;
    send(session, resp, None).await
}

async fn send(
    session: &mut Session,
    resp: ResponseHeader,
    body: Option<Bytes>,
) -> pingora::Result<()> {
    let end = body.is_none() || session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), end).await?;
    if !end {
        if let Some(body) = body {
            session.write_response_body(Some(body), true).await?;
        }
    }
    Ok(())
}

/// The status a failed proxy attempt answers with; 0 when the client is gone.
pub fn status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                ErrorType::ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// The edge refusal a failed request counts as: a body that passed its limit or
/// stalled past `body_timeout`.
pub fn edge_refusal(e: &Error) -> Option<Reason> {
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(413), _) => Some(Reason::BodyTooLarge),
        (ErrorType::ReadTimedout, ErrorSource::Downstream) => Some(Reason::BodyTimeout),
        _ => None,
    }
}

/// The error for "no backend to send this to": the last connect failure's status, else 503.
pub fn no_backend(connect_failure: Option<u16>) -> Box<Error> {
    let status = connect_failure.unwrap_or(503);
    Error::explain(ErrorType::HTTPStatus(status), "no usable backend")
}

/// Answers a failed proxy attempt when nothing was written yet; returns the status code
/// for Pingora (0: the error had no answer).
pub async fn answer_failure(
    session: &mut Session,
    e: &Error,
    ctx: &mut super::ctx::RequestCtx,
) -> u16 {
    let code = status_for(e);
    if code > 0 && session.response_written().is_none() {
        if ctx.request_id.is_empty() {
            ctx.request_id = super::headers::new_request_id();
        }
        // A caching route's error answers carry X-Cache too.
        let x_cache = super::cache::stamp_error(session, ctx);
        if let Err(err) = respond_with(session, code, &ctx.request_id, None, x_cache).await {
            log::debug!("could not send the {code} answer: {err}");
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_504_and_connect_errors_502() {
        assert_eq!(status_for(&Error::new_up(ErrorType::ReadTimedout)), 504);
        assert_eq!(status_for(&Error::new_up(ErrorType::ConnectRefused)), 502);
        assert_eq!(status_for(&Error::new_down(ErrorType::ConnectionClosed)), 0);
        assert_eq!(status_for(&Error::new(ErrorType::HTTPStatus(503))), 503);
        // A client that stalls its body.
        assert_eq!(status_for(&Error::new_down(ErrorType::ReadTimedout)), 408);
    }

    #[test]
    fn bodies_are_short() {
        for s in [400, 403, 404, 408, 413, 429, 431, 500, 502, 503, 504] {
            assert!(format!("{s} {}\n", reason(s)).len() < 1024);
        }
    }

    #[test]
    fn compiled_bodies_are_status_reason_newline() {
        for s in 100..600 {
            assert_eq!(body(s), format!("{s} {}\n", reason(s)).as_bytes(), "{s}");
        }
        assert_eq!(body(404), "404 no route for this request\n".as_bytes());
    }
}
