//! One HTTP/3 request stream as a Pingora server session (Pingora's `custom` session
//! seam), so the request runs through the listener's own `HttpProxy`: every hook,
//! Pingora's upstream connectors and pools, its cache and retry machinery. Bodies stream
//! both ways chunk by chunk (QUIC flow control is the back-pressure); nothing is
//! buffered beyond Pingora's retry buffer (64 KiB, as its HTTP/2 session keeps).

use super::stream::Streams;
use async_trait::async_trait;
use bytes::Bytes;
use h3::error::Code;
use h3::server::RequestStream;
use http::{header, HeaderMap, HeaderName};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::Digest;
use pingora::{Error, ErrorType, OrErr, Result};
use pingora_core::protocols::http::body_buffer::FixedBuffer;
use pingora_core::protocols::http::custom::server::Session;
use pingora_core::protocols::http::custom::CustomMessageWrite;
use pingora_core::protocols::http::date::get_cached_date;
use pingora_core::protocols::http::HttpTask;
use std::time::Duration;
use tokio::time::timeout;

type MessageReader =
    Box<dyn futures_util::Stream<Item = Result<Bytes>> + Unpin + core::marker::Send + Sync>;

/// What Pingora keeps of a request body for a retry on another backend.
const RETRY_BUFFER: usize = 64 * 1024;

/// One request stream.
pub struct H3Session {
    req: RequestHeader,
    io: Streams,
    /// Ends `read_body_or_idle` when the client goes away.
    conn: quinn::Connection,
    digest: Digest,
    response: Option<Box<ResponseHeader>>,
    body_read: usize,
    retry: Option<FixedBuffer>,
    drain_timeout: Option<Duration>,
}

impl H3Session {
    /// `digest` names the QUIC client (peer address) and the local address.
    pub fn new(
        req: RequestHeader,
        stream: RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
        conn: quinn::Connection,
        digest: Digest,
    ) -> Self {
        H3Session {
            req,
            io: Streams::new(stream),
            conn,
            digest,
            response: None,
            body_read: 0,
            retry: None,
            drain_timeout: None,
        }
    }

    async fn drain(&mut self) -> Result<()> {
        while self.read_body_bytes().await?.is_some() {}
        Ok(())
    }
}

/// Fields that mean something only on one HTTP/1 connection (RFC 9114 §4.2).
fn strip_connection_fields(h: &mut ResponseHeader) {
    for name in [
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        h.remove_header(&name);
    }
}

#[async_trait]
impl Session for H3Session {
    fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.req
    }

    async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        let chunk = self.io.next_chunk().await?;
        if let Some(c) = &chunk {
            self.body_read += c.len();
            if let Some(buffer) = self.retry.as_mut() {
                buffer.write_to_buffer(c);
            }
        }
        Ok(chunk)
    }

    async fn drain_request_body(&mut self) -> Result<()> {
        if self.is_body_done() {
            return Ok(());
        }
        match self.drain_timeout {
            Some(t) => timeout(t, self.drain())
                .await
                .or_err(ErrorType::ReadTimedout, "draining the HTTP/3 request body")?,
            None => self.drain().await,
        }
    }

    async fn write_response_header(
        &mut self,
        mut resp: Box<ResponseHeader>,
        end: bool,
    ) -> Result<()> {
        // h3 sends one header block per response: informational ones are dropped, as
        // Pingora's HTTP/2 session does.
        if self.io.ended || self.response.is_some() || resp.status.is_informational() {
            return Ok(());
        }
        resp.insert_header(header::DATE, get_cached_date())?;
        strip_connection_fields(&mut resp);
        let parts: http::response::Parts = resp.as_owned_parts();
        self.io.send_header(parts).await?;
        self.response = Some(resp);
        if end {
            self.io.finish().await?;
        }
        Ok(())
    }

    async fn write_response_header_ref(&mut self, resp: &ResponseHeader, end: bool) -> Result<()> {
        self.write_response_header(Box::new(resp.clone()), end)
            .await
    }

    async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        if self.io.ended {
            return Ok(());
        }
        if self.response.is_none() {
            return Error::e_explain(ErrorType::WriteError, "HTTP/3 body before the header");
        }
        self.io.send_body(data, end).await
    }

    async fn write_trailers(&mut self, trailers: HeaderMap) -> Result<()> {
        if self.io.ended {
            return Ok(());
        }
        self.io.send_trailers(trailers).await
    }

    async fn response_duplex_vec(&mut self, tasks: Vec<HttpTask>) -> Result<bool> {
        let mut end_stream = false;
        for task in tasks {
            let end = match task {
                HttpTask::Header(header, end) => {
                    self.write_response_header(header, end)
                        .await
                        .map_err(|e| e.into_down())?;
                    end
                }
                HttpTask::Body(data, end) => {
                    if let Some(d) = data.filter(|d| !d.is_empty()) {
                        self.write_body(d, false).await.map_err(|e| e.into_down())?;
                    }
                    end
                }
                HttpTask::UpgradedBody(..) => {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "an upgraded body on an HTTP/3 session",
                    );
                }
                HttpTask::Trailer(Some(trailers)) => {
                    self.write_trailers(*trailers).await?;
                    true
                }
                HttpTask::Trailer(None) | HttpTask::Done => true,
                HttpTask::Failed(e) => return Err(e),
            };
            end_stream = end_stream || end;
        }
        if end_stream {
            self.io.finish().await.map_err(|e| e.into_down())?;
        }
        Ok(end_stream)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.io.read_timeout = timeout;
    }

    fn get_read_timeout(&self) -> Option<Duration> {
        self.io.read_timeout
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.io.write_timeout = timeout;
    }

    fn get_write_timeout(&self) -> Option<Duration> {
        self.io.write_timeout
    }

    fn set_total_drain_timeout(&mut self, timeout: Option<Duration>) {
        self.drain_timeout = timeout;
    }

    fn get_total_drain_timeout(&self) -> Option<Duration> {
        self.drain_timeout
    }

    fn request_summary(&self) -> String {
        format!(
            "{} {}, Host: {}",
            self.req.method,
            self.req.uri.path_and_query().map_or("", |p| p.as_str()),
            self.req.uri.authority().map_or("", |a| a.as_str()),
        )
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        self.response.as_deref()
    }

    async fn shutdown(&mut self, _code: u32, _ctx: &str) {
        self.io.reset(Code::H3_INTERNAL_ERROR);
    }

    async fn abandon(&mut self, _ctx: &str) {
        // A reset, never a FIN: the client must not take a cut response as whole.
        self.io.reset(Code::H3_INTERNAL_ERROR);
    }

    fn is_body_done(&mut self) -> bool {
        self.is_body_empty() || (self.io.first.is_none() && self.io.body_done)
    }

    async fn finish(&mut self) -> Result<()> {
        if self.response.is_some() {
            self.io.finish().await?;
        }
        Ok(())
    }

    fn is_body_empty(&mut self) -> bool {
        self.body_read == 0
            && self.io.first.is_none()
            && (self.io.body_done
                || self
                    .req
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes() == b"0"))
    }

    async fn read_body_or_idle(&mut self, no_body_expected: bool) -> Result<Option<Bytes>> {
        if no_body_expected || self.is_body_done() {
            let reason = self.conn.closed().await;
            return Error::e_explain(
                ErrorType::ConnectionClosed,
                format!("the HTTP/3 client went away: {reason}"),
            );
        }
        self.read_body_bytes().await
    }

    fn body_bytes_sent(&self) -> usize {
        self.io.body_sent
    }

    fn body_bytes_read(&self) -> usize {
        self.body_read
    }

    fn digest(&self) -> Option<&Digest> {
        Some(&self.digest)
    }

    fn digest_mut(&mut self) -> Option<&mut Digest> {
        Some(&mut self.digest)
    }

    fn client_addr(&self) -> Option<&SocketAddr> {
        self.digest
            .socket_digest
            .as_ref()
            .and_then(|d| d.peer_addr())
    }

    fn server_addr(&self) -> Option<&SocketAddr> {
        self.digest
            .socket_digest
            .as_ref()
            .and_then(|d| d.local_addr())
    }

    fn pseudo_raw_h1_request_header(&self) -> Bytes {
        let mut h1 = self.req.clone();
        h1.set_version(http::Version::HTTP_11);
        pingora_core::protocols::http::v1::client::http_req_header_to_wire(&h1)
            .map(|b| b.freeze())
            .unwrap_or_default()
    }

    fn enable_retry_buffering(&mut self) {
        if self.retry.is_none() {
            self.retry = Some(FixedBuffer::new(RETRY_BUFFER));
        }
    }

    fn retry_buffer_truncated(&self) -> bool {
        self.retry.as_ref().is_some_and(|r| r.is_truncated())
    }

    fn get_retry_buffer(&self) -> Option<Bytes> {
        self.retry
            .as_ref()
            .filter(|b| !b.is_truncated())
            .and_then(|b| b.get_buffer())
    }

    async fn finish_custom(&mut self) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_reader(&mut self) -> Option<MessageReader> {
        None
    }

    fn restore_custom_message_reader(&mut self, _reader: MessageReader) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_writer(&mut self) -> Option<Box<dyn CustomMessageWrite>> {
        None
    }

    fn restore_custom_message_writer(
        &mut self,
        _writer: Box<dyn CustomMessageWrite>,
    ) -> Result<()> {
        Ok(())
    }
}
