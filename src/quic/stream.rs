//! The two QUIC stream halves of one HTTP/3 request, with their timeouts: reading the
//! request body (the first chunk may have been read ahead), sending the response, and
//! resetting whatever is unfinished when the request ends early or is dropped.

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use h3::error::Code;
use h3::server::RequestStream;
use http::{HeaderMap, Response};
use pingora::{ErrorType, OrErr, Result};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::timeout;

type Send = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type Recv = RequestStream<h3_quinn::RecvStream, Bytes>;

/// The h3 stream halves are not `Sync` (Pingora's session trait asks for it); every use
/// is through `&mut self`, so the mutexes are only ever `get_mut`.
pub struct Streams {
    send: Mutex<Send>,
    recv: Mutex<Recv>,
    /// A body chunk read ahead, handed out first.
    pub first: Option<Bytes>,
    /// The response is finished (FIN sent) or abandoned.
    pub ended: bool,
    /// The request body's end was seen.
    pub body_done: bool,
    pub body_sent: usize,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
}

impl Streams {
    pub fn new(stream: RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>) -> Self {
        let (send, mut recv) = stream.split();
        // A request without a body usually arrives with its FIN: knowing it now lets
        // Pingora send the backend a request without a body (not an empty chunked one).
        let (first, body_done) = match recv.recv_data().now_or_never() {
            Some(Ok(Some(mut chunk))) => (Some(chunk.copy_to_bytes(chunk.remaining())), false),
            Some(Ok(None)) => (None, true),
            Some(Err(_)) | None => (None, false),
        };
        Streams {
            send: Mutex::new(send),
            recv: Mutex::new(recv),
            first,
            ended: false,
            body_done,
            body_sent: 0,
            read_timeout: None,
            write_timeout: None,
        }
    }

    fn send(&mut self) -> &mut Send {
        self.send.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    fn recv(&mut self) -> &mut Recv {
        self.recv.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// The next request body chunk, `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if let Some(chunk) = self.first.take() {
            return Ok(Some(chunk));
        }
        if self.body_done {
            return Ok(None);
        }
        let wait = self.read_timeout;
        let read = self.recv().recv_data();
        let data = match wait {
            Some(t) => timeout(t, read)
                .await
                .or_err(ErrorType::ReadTimedout, "reading the HTTP/3 request body")?,
            None => read.await,
        }
        .or_err(ErrorType::ReadError, "reading the HTTP/3 request body")?;
        match data {
            Some(mut chunk) => Ok(Some(chunk.copy_to_bytes(chunk.remaining()))),
            None => {
                self.body_done = true;
                Ok(None)
            }
        }
    }

    pub async fn send_header(&mut self, parts: http::response::Parts) -> Result<()> {
        self.send()
            .send_response(Response::from_parts(parts, ()))
            .await
            .or_err(ErrorType::WriteError, "writing the HTTP/3 response header")
    }

    pub async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<()> {
        self.send().send_trailers(trailers).await.or_err(
            ErrorType::WriteError,
            "writing the HTTP/3 response trailers",
        )?;
        self.finish().await
    }

    /// Ends the response with a FIN (once).
    pub async fn finish(&mut self) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        self.send()
            .finish()
            .await
            .or_err(ErrorType::WriteError, "finishing the HTTP/3 response")
    }

    pub async fn send_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        let len = data.len();
        if len > 0 {
            let wait = self.write_timeout;
            let write = self.send().send_data(data);
            match wait {
                Some(t) => timeout(t, write)
                    .await
                    .or_err(ErrorType::WriteTimedout, "writing the HTTP/3 response body")?,
                None => write.await,
            }
            .or_err(ErrorType::WriteError, "writing the HTTP/3 response body")?;
            self.body_sent += len;
        }
        if end {
            self.finish().await?;
        }
        Ok(())
    }

    /// Resets the response if it is not finished; asks the client to stop sending a
    /// request body nobody will read (H3_NO_ERROR once the response is whole, RFC 9114
    /// §4.1).
    pub fn reset(&mut self, code: Code) {
        let finished = self.ended;
        if !self.ended {
            self.ended = true;
            self.send().stop_stream(code);
        }
        if !self.body_done {
            self.body_done = true;
            let why = if finished { Code::H3_NO_ERROR } else { code };
            self.recv().stop_sending(why);
        }
    }
}

impl Drop for Streams {
    /// A response that was not finished is reset, never ended with a FIN (dropping a
    /// QUIC send stream would finish it): a cut response must not look whole.
    fn drop(&mut self) {
        self.reset(Code::H3_INTERNAL_ERROR);
    }
}
