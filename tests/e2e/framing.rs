//! HTTP/1 message framing end to end (SPEC §10, RFC 9112 §2–7): every smuggling shape
//! is refused with 400 (501 for an unsupported coding) and a closed connection, and
//! never reaches the backend; `Upgrade: h2c` is never forwarded; pipelined requests are
//! all answered in order, and none after a refused one is processed. Raw bytes on a
//! TcpStream; the backend records every byte it receives.
use crate::common::config::*;
use crate::common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A backend that records every byte it receives and answers each request (with a
/// Content-Length or chunked body) `200` with its target as body and `X-Path`.
struct Recorder {
    server: TcpServer,
    /// Everything received, over every connection.
    bytes: Arc<Mutex<Vec<u8>>>,
    /// The head (request line and fields) of every complete request, in order.
    heads: Arc<Mutex<Vec<String>>>,
    /// The de-chunked body of every complete request.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let bytes: Arc<Mutex<Vec<u8>>> = Arc::default();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let (b, h, d) = (bytes.clone(), heads.clone(), bodies.clone());
        let server = TcpServer::start(move |s| record(s, &b, &h, &d));
        Recorder {
            server,
            bytes,
            heads,
            bodies,
        }
    }

    fn address(&self) -> String {
        self.server.address()
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).to_string()
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// The target of every request seen, in order.
    fn targets(&self) -> Vec<String> {
        self.heads()
            .iter()
            .map(|h| h.split(' ').nth(1).unwrap_or("").to_string())
            .collect()
    }

    /// Waits (bounded) until `n` requests were seen.
    fn wait_requests(&self, n: usize) -> bool {
        wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            self.heads().len() >= n
        })
    }
}

/// The length of a complete chunked body at the start of `b` and its data, if complete.
fn dechunk(b: &[u8]) -> Option<(usize, Vec<u8>)> {
    let (mut at, mut data) = (0, Vec::new());
    loop {
        let line_end = at + b[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = String::from_utf8_lossy(&b[at..line_end]).to_string();
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // No trailers are sent by the proxy: the body ends with an empty line.
            return (b.len() >= at + 2).then(|| (at + 2, data));
        }
        if b.len() < at + size + 2 {
            return None;
        }
        data.extend_from_slice(&b[at..at + size]);
        at += size + 2;
    }
}

fn record(
    mut s: TcpStream,
    bytes: &Mutex<Vec<u8>>,
    heads: &Mutex<Vec<String>>,
    bodies: &Mutex<Vec<Vec<u8>>>,
) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        // Answer every complete request in the buffer.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let lower = head.to_ascii_lowercase();
            let rest = &buf[end + 4..];
            let (used, body) = if lower.contains("\r\ntransfer-encoding:") {
                match dechunk(rest) {
                    Some(done) => done,
                    None => break,
                }
            } else {
                let length = lower
                    .split("\r\n")
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if rest.len() < length {
                    break;
                }
                (length, rest[..length].to_vec())
            };
            buf.drain(..end + 4 + used);
            let target = head.split(' ').nth(1).unwrap_or("").to_string();
            heads.lock().unwrap().push(head);
            bodies.lock().unwrap().push(body);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Path: {target}\r\n\r\n{target}",
                target.len()
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                bytes.lock().unwrap().extend_from_slice(&chunk[..n]);
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Switchyard with one listener whose only route sends everything to `backend`.
fn start(backend: &Recorder) -> (Switchyard, u16) {
    let port = listen_port();
    let config = config_of(
        json!([listener("web", port)]),
        json!([pool("p", &[backend.address()])]),
        json!([route("all", "p")]),
    );
    (Switchyard::start_config(&config, &[port]), port)
}

/// What a client got for raw bytes: every response in order, and whether the
/// server closed the connection (within 5 s).
struct Exchange {
    replies: Vec<Reply>,
    closed: bool,
    text: String,
}

impl Exchange {
    fn statuses(&self) -> Vec<u16> {
        self.replies.iter().map(|r| r.status).collect()
    }
}

/// Writes `bytes` at once, then reads responses until the server closes, `want`
/// responses have arrived and nothing more comes for 300 ms, or 5 s have passed.
fn exchange(port: u16, bytes: &[u8], want: usize) -> Exchange {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = s.write_all(bytes);
    let (mut out, mut chunk) = (Vec::new(), [0u8; 16384]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut closed = false;
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if want > 0 && parse_all(&out).len() >= want {
                    break;
                }
            }
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    Exchange {
        replies: parse_all(&out),
        closed,
        text: String::from_utf8_lossy(&out).to_string(),
    }
}

/// Every complete response (Content-Length framed) in `out`.
fn parse_all(mut out: &[u8]) -> Vec<Reply> {
    let mut replies = Vec::new();
    while let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
        let Some(reply) = parse_reply(&String::from_utf8_lossy(&out[..end + 4])) else {
            break;
        };
        let length: usize = reply
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if out.len() < end + 4 + length {
            break;
        }
        let body = String::from_utf8_lossy(&out[end + 4..end + 4 + length]).to_string();
        replies.push(Reply { body, ..reply });
        out = &out[end + 4 + length..];
    }
    replies
}

/// Each `(label, bytes)` gets exactly one answer, `status`, the connection is closed
/// after it, and the backend receives nothing. Then a plain request is still served.
fn assert_refused(status: u16, cases: &[(&str, &[u8])]) {
    let backend = Recorder::start();
    let (_sy, port) = start(&backend);
    for (label, bytes) in cases {
        let x = exchange(port, bytes, 0);
        assert_eq!(x.statuses(), vec![status], "{label}: got {:?}", x.text);
        assert!(
            x.closed,
            "{label}: the connection must be closed: {:?}",
            x.text
        );
    }
    // Let anything forwarded by mistake arrive before looking.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        backend.received(),
        "",
        "refused requests must never reach the backend"
    );
    let x = exchange(
        port,
        b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        1,
    );
    assert_eq!(x.statuses(), vec![200], "{:?}", x.text);
}

/// A POST with `fields` (each ending in CRLF) and `body`, then a request the body hides.
fn post(fields: &str, body: &str) -> Vec<u8> {
    format!("POST /outer HTTP/1.1\r\nHost: a\r\n{fields}\r\n{body}").into_bytes()
}

const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn two_content_lengths_and_content_length_lists_are_400() {
    let same = post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello");
    let differ = post("Content-Length: 5\r\nContent-Length: 41\r\n", "hello");
    let list = post("Content-Length: 5, 5\r\n", "hello");
    let mixed = post("Content-Length: 5, 41\r\n", "hello");
    let signed = post("Content-Length: +5\r\n", "hello");
    assert_refused(
        400,
        &[
            ("two equal Content-Length", &same),
            ("two different Content-Length", &differ),
            ("Content-Length: 5, 5", &list),
            ("Content-Length: 5, 41", &mixed),
            ("Content-Length: +5", &signed),
        ],
    );
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    let body = format!("0\r\n\r\n{HIDDEN}");
    let cl_te = post(
        &format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            body.len()
        ),
        &body,
    );
    let te_cl = post(
        &format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
            body.len()
        ),
        &body,
    );
    let underscore = post("Content_Length: 5\r\nTransfer-Encoding: chunked\r\n", &body);
    assert_refused(
        400,
        &[
            ("CL then TE", &cl_te),
            ("TE then CL", &te_cl),
            ("Content_Length with TE", &underscore),
        ],
    );
}

#[test]
fn obfuscated_transfer_encodings_are_400() {
    let body = format!("0\r\n\r\n{HIDDEN}");
    let shapes = [
        "Transfer-Encoding : chunked\r\n",
        "Transfer-Encoding\t: chunked\r\n",
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunkedx\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: \"chunked\"\r\n",
        "Transfer-Encoding: \x0bchunked\r\n",
        "Transfer-Encoding: chunked\x0c\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer_Encoding: chunked\r\n",
        "X-Pad: x\r\n Transfer-Encoding: chunked\r\n",
    ];
    let requests: Vec<Vec<u8>> = shapes.iter().map(|s| post(s, &body)).collect();
    let http10 =
        format!("POST /outer HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
    let mut cases: Vec<(&str, &[u8])> = shapes
        .iter()
        .zip(&requests)
        .map(|(s, r)| (*s, &r[..]))
        .collect();
    cases.push(("TE on HTTP/1.0", http10.as_bytes()));
    assert_refused(400, &cases);
}

#[test]
fn a_coding_other_than_chunked_before_chunked_is_501() {
    let body = format!("0\r\n\r\n{HIDDEN}");
    let gzip = post("Transfer-Encoding: gzip, chunked\r\n", &body);
    let unknown = post("Transfer-Encoding: foo, chunked\r\n", &body);
    assert_refused(501, &[("gzip, chunked", &gzip), ("foo, chunked", &unknown)]);
}

#[test]
fn chunked_in_any_case_and_with_tabs_is_one_framing_toward_the_backend() {
    let backend = Recorder::start();
    let (_sy, port) = start(&backend);
    let shapes = [
        "Transfer-Encoding: chunked\r\n",
        "transfer-encoding: CHUNKED\r\n",
        "Transfer-Encoding:\tchunked\t\r\n",
    ];
    for (i, te) in shapes.iter().enumerate() {
        let raw = format!(
            "POST /c{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{te}\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
        );
        let x = exchange(port, raw.as_bytes(), 1);
        assert_eq!(x.statuses(), vec![200], "{te:?}: {:?}", x.text);
    }
    assert!(backend.wait_requests(shapes.len()));
    let heads = backend.heads();
    for head in &heads {
        let te: Vec<&str> = head
            .split("\r\n")
            .filter(|l| l.to_ascii_lowercase().starts_with("transfer-encoding"))
            .collect();
        assert_eq!(te.len(), 1, "{head}");
        assert!(
            te[0].eq_ignore_ascii_case("transfer-encoding: chunked"),
            "{head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("content-length"),
            "{head}"
        );
    }
    let bodies = backend.bodies.lock().unwrap().clone();
    assert_eq!(bodies, vec![b"abcde".to_vec(); shapes.len()]);
}

#[test]
fn bare_lf_bare_cr_space_before_colon_and_obs_fold_are_400() {
    assert_refused(
        400,
        &[
            (
                "bare LF after the request line",
                b"GET /x HTTP/1.1\nHost: a\r\n\r\n",
            ),
            (
                "bare LF line endings throughout",
                b"GET /x HTTP/1.1\nHost: a\n\n",
            ),
            (
                "bare LF in a field",
                b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\nX-B: c\r\n\r\n",
            ),
            (
                "bare CR in a field",
                b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\rX-B: c\r\n\r\n",
            ),
            ("bare CR line ending", b"GET /x HTTP/1.1\rHost: a\r\n\r\n"),
            (
                "space before the colon",
                b"GET /x HTTP/1.1\r\nHost : a\r\n\r\n",
            ),
            (
                "tab before the colon",
                b"GET /x HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n",
            ),
            (
                "obs-fold with a space",
                b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            ),
            (
                "obs-fold with a tab",
                b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n",
            ),
        ],
    );
}

#[test]
fn http11_without_host_is_400_and_http10_without_host_is_served() {
    assert_refused(
        400,
        &[
            (
                "HTTP/1.1 without Host",
                b"GET /x HTTP/1.1\r\nX-A: b\r\n\r\n",
            ),
            (
                "absolute-form HTTP/1.1 without Host",
                b"GET http://a/x HTTP/1.1\r\n\r\n",
            ),
        ],
    );
    let backend = Recorder::start();
    let (_sy, port) = start(&backend);
    let x = exchange(port, b"GET /old HTTP/1.0\r\n\r\n", 1);
    assert_eq!(x.statuses(), vec![200], "{:?}", x.text);
    assert_eq!(backend.targets(), vec!["/old"]);
}

#[test]
fn an_absolute_form_target_whose_host_differs_from_host_is_400() {
    assert_refused(
        400,
        &[
            (
                "absolute-form other host",
                b"GET http://other.example/x HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "absolute-form with userinfo",
                b"GET http://u@a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
        ],
    );
    // The same authority in both is an ordinary request.
    let backend = Recorder::start();
    let (_sy, port) = start(&backend);
    let raw = b"GET http://a/abs HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let x = exchange(port, raw, 1);
    assert_eq!(x.statuses(), vec![200], "{:?}", x.text);
}

#[test]
fn control_bytes_in_the_target_are_400() {
    assert_refused(
        400,
        &[
            (
                "NUL before the path",
                b"GET \x00/x HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "NUL in the path",
                b"GET /x\x00y HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            ("SOH in the path", b"GET /x\x01 HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("DEL in the path", b"GET /x\x7f HTTP/1.1\r\nHost: a\r\n\r\n"),
            (
                "NUL in the query",
                b"GET /x?a=\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "encoded CRLF in the path",
                b"GET /x%0d%0aSet-Cookie:%20a HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "a target in no form",
                b"GET x/y HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
        ],
    );
}

#[test]
fn invalid_chunk_sizes_close_the_connection_and_nothing_hidden_is_forwarded() {
    // Chunk sizes are read by Pingora's body reader once the request is proxied, so the
    // backend already has the request line and fields; what it must never see is the
    // request behind the bad chunk, nor a complete body (Pingora drops that backend
    // connection, unfinished).
    let backend = Recorder::start();
    let (_sy, port) = start(&backend);
    let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "a".repeat(70_000));
    let shapes: Vec<(&str, String)> = vec![
        ("-1", "-1\r\nx\r\n0\r\n\r\n".into()),
        ("0x10", "0x10\r\n0123456789abcdef\r\n0\r\n\r\n".into()),
        ("overlong hex", "10000000000000000\r\nx\r\n0\r\n\r\n".into()),
        ("non-hex", "zz\r\nx\r\n0\r\n\r\n".into()),
        ("size then junk", "1 x\r\nx\r\n0\r\n\r\n".into()),
        ("no CRLF after the data", "1\r\nxy0\r\n\r\n".into()),
        ("bare LF after the size", "1\nx\r\n0\r\n\r\n".into()),
        ("bare LF after the data", "1\r\nx\n0\r\n\r\n".into()),
        ("bare LF in the last chunk", "1\r\nx\r\n0\n\n".into()),
        ("a 70 KB chunk line", long_ext),
    ];
    for (label, chunks) in &shapes {
        let raw = post(
            "Transfer-Encoding: chunked\r\n",
            &format!("{chunks}{HIDDEN}"),
        );
        let x = exchange(port, &raw, 0);
        assert!(
            x.closed,
            "{label}: the connection must be closed: {:?}",
            x.text
        );
        assert!(
            x.statuses().iter().all(|s| *s == 400),
            "{label}: only a 400 may come back: {:?}",
            x.text
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let seen = backend.received();
    assert!(
        !seen.contains("/smuggled"),
        "a hidden request was forwarded: {seen:?}"
    );
    assert!(
        backend.bodies.lock().unwrap().is_empty(),
        "the backend got a complete request: {:?}",
        backend.heads()
    );
}

#[test]
fn chunk_extensions_with_junk_are_dropped_and_the_body_re_chunked() {
    // httparse ignores every byte of a chunk extension, a bare LF included, and Pingora
    // limits a chunk line to 8 KiB only while it is incomplete in its buffer. Neither can
    // desynchronise the backend: Pingora re-chunks the body toward it without the
    // extensions, so the backend sees only our framing.
    let backend = Recorder::start();
    let (_sy, port) = start(&backend);
    let long = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(9000));
    let bodies = [
        "3;a=\"b\"\x01 junk\nstill-ext\r\nabc\r\n0\r\n\r\n".to_string(),
        long,
    ];
    for body in &bodies {
        let raw = post("Transfer-Encoding: chunked\r\nConnection: close\r\n", body);
        let x = exchange(port, &raw, 1);
        assert_eq!(x.statuses(), vec![200], "{:?}", x.text);
    }
    assert!(backend.wait_requests(2));
    let received = backend.received();
    assert!(
        !received.contains("junk"),
        "extension forwarded: {received:?}"
    );
    assert!(!received.contains("still-ext"), "{received:?}");
    assert!(!received.contains("eeee"), "long extension forwarded");
    let got = backend.bodies.lock().unwrap().clone();
    assert_eq!(got, vec![b"abc".to_vec(), b"x".to_vec()]);
}

#[test]
fn upgrade_h2c_is_never_forwarded() {
    let backend = Recorder::start();
    let (_sy, port) = start(&backend);
    let raw = b"GET /upgrade HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let x = exchange(port, raw, 1);
    assert_eq!(x.statuses(), vec![200], "no switch to h2c: {:?}", x.text);
    assert!(backend.wait_requests(1));
    let head = backend.heads()[0].to_ascii_lowercase();
    assert!(!head.contains("\r\nupgrade:"), "Upgrade forwarded: {head}");
    assert!(
        !head.contains("http2-settings"),
        "HTTP2-Settings forwarded: {head}"
    );
    assert!(!head.contains("h2c"), "{head}");
}

#[test]
fn requests_pipelined_after_a_refused_one_are_not_processed() {
    let backend = Recorder::start();
    let (_sy, port) = start(&backend);
    let bad = [
        // Refused by Switchyard's guard.
        "GET /bad HTTP/1.1\nHost: a\r\n\r\n",
        "POST /bad HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 0\r\n\r\n",
        // Refused by Pingora's parser.
        "GET /bad HTTP/1.1\r\nHost : a\r\n\r\n",
    ];
    for (i, bad) in bad.iter().enumerate() {
        let raw = format!(
            "GET /first{i} HTTP/1.1\r\nHost: a\r\n\r\n{bad}GET /after{i} HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let x = exchange(port, raw.as_bytes(), 0);
        assert_eq!(x.statuses(), vec![200, 400], "{bad:?}: {:?}", x.text);
        assert_eq!(x.replies[0].body, format!("/first{i}"));
        assert!(x.closed, "{bad:?}: closed after the 400");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(backend.targets(), vec!["/first0", "/first1", "/first2"]);
}

#[test]
fn fifty_pipelined_gets_are_all_answered_in_order() {
    let backend = Recorder::start();
    let (_sy, port) = start(&backend);
    let raw: String = (0..50)
        .map(|i| format!("GET /p{i} HTTP/1.1\r\nHost: a\r\n\r\n"))
        .collect();
    let x = exchange(port, raw.as_bytes(), 50);
    let bodies: Vec<String> = x.replies.iter().map(|r| r.body.clone()).collect();
    let want: Vec<String> = (0..50).map(|i| format!("/p{i}")).collect();
    assert_eq!(bodies, want, "{:?}", x.text);
    assert!(x.replies.iter().all(|r| r.status == 200));
    assert_eq!(
        backend.targets(),
        want,
        "the backend saw each once, in order"
    );
}

#[test]
fn a_pipelined_post_body_is_not_read_as_a_request() {
    // The body of a Content-Length request ends where it says; what follows is the
    // next request, not part of the body and not lost.
    let backend = Recorder::start();
    let (_sy, port) = start(&backend);
    let raw = b"POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let x = exchange(port, raw, 2);
    assert_eq!(x.statuses(), vec![200, 200], "{:?}", x.text);
    assert_eq!(backend.targets(), vec!["/one", "/two"]);
    assert_eq!(backend.bodies.lock().unwrap()[0], b"hello".to_vec());
}

#[test]
fn an_oversized_header_section_is_431_and_closed() {
    let mut raw = b"GET /big HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 70 * 1024));
    raw.extend_from_slice(b"\r\n\r\n");
    assert_refused(431, &[("70 KiB header", &raw)]);
}

#[test]
fn a_refused_request_is_logged_with_the_client_ip() {
    let backend = Recorder::start();
    let (sy, port) = start(&backend);
    let x = exchange(
        port,
        b"GET /log HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx",
        0,
    );
    assert_eq!(x.statuses(), vec![400], "{:?}", x.text);
    let entries = sy.access_entries(1);
    let entry = entries
        .iter()
        .find(|e| e["path"] == "/log")
        .unwrap_or_else(|| panic!("no access-log line: {entries:?}"));
    assert_eq!(entry["status"], 400);
    assert_eq!(entry["client_ip"], "127.0.0.1");
}
