//! Protocol-aware health checks for database pools, as pingora-load-balancing
//! `HealthCheck`s: PostgreSQL answers a StartupMessage; MySQL/MariaDB sends its
//! handshake and gets a complete handshake response and COM_QUIT back, so no check ever
//! counts as an aborted connection against `max_connect_errors`.

use async_trait::async_trait;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::Backend as LbBackend;
use pingora::{Error, ErrorType, Result};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a database's answer to a health check means "not ready".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbRefusal {
    #[error("no answer: end of input")]
    NoAnswer,
    #[error("short answer: end of input")]
    ShortAnswer,
    #[error("server cannot accept connections now (57P03)")]
    NotAccepting,
    #[error("login refused: {0}")]
    LoginRefused(String),
    #[error("unexpected message type {0:?}")]
    UnexpectedMessage(char),
    #[error("server refused: {0}")]
    ServerRefused(String),
    #[error("not a MySQL handshake")]
    NotMysql,
    #[error("the health-check user needs a password-less native login")]
    NeedsNativeLogin,
    #[error("login as {0} refused")]
    UserRefused(String),
    #[error("read: end of input")]
    Truncated,
}

fn fail(why: impl std::fmt::Display) -> Box<Error> {
    Error::explain(
        ErrorType::CustomCode("health check failed", 0),
        why.to_string(),
    )
}

/// Connects within `timeout` and sends the pool's PROXY header first, if it has one.
async fn connect(
    target: &LbBackend,
    timeout: Duration,
    proxy_header: Option<&[u8]>,
) -> Result<TcpStream> {
    let addr = target
        .addr
        .as_inet()
        .copied()
        .ok_or_else(|| fail("not an inet address"))?;
    let mut s = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(fail(format!("connect: {e}"))),
        Err(_) => return Err(fail("connect timed out")),
    };
    if let Some(header) = proxy_header {
        super::proxy_out::write_header(&mut s, header, timeout).await?;
    }
    Ok(s)
}

/// PostgreSQL: a StartupMessage (protocol 3.0) for `user`/`database`. Without a
/// configured user any protocol answer is healthy (an authentication request, or an
/// error such as an unknown role); with one, authentication must succeed or be asked
/// for. "Cannot connect now" (57P03: starting up or shutting down) is unhealthy either
/// way. A standby in recovery accepts connections and is healthy.
pub struct PostgresCheck {
    pub user: Option<String>,
    pub database: Option<String>,
    pub timeout: Duration,
    /// Sent first when the pool sends PROXY headers (`upstream.proxy_protocol`).
    pub proxy_header: Option<Vec<u8>>,
}

impl PostgresCheck {
    fn startup_message(&self) -> Vec<u8> {
        let user = self.user.as_deref().unwrap_or("switchyard_health");
        let mut body = Vec::new();
        body.extend_from_slice(&196608u32.to_be_bytes()); // protocol 3.0
        for (k, v) in [
            ("user", user),
            ("database", self.database.as_deref().unwrap_or("postgres")),
        ] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.extend_from_slice(b"application_name\0switchyard-health\0\0");
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        msg
    }

    async fn probe(&self, target: &LbBackend) -> Result<()> {
        let mut s = connect(target, self.timeout, self.proxy_header.as_deref()).await?;
        s.write_all(&self.startup_message())
            .await
            .map_err(|e| fail(format!("write: {e}")))?;
        let mut login = PgLogin::new(self.user.is_some());
        let verdict = loop {
            let (kind, body) = read_message(&mut s).await?;
            if let Some(verdict) = login.on_message(kind, &body) {
                break verdict;
            }
        };
        // Terminate politely whatever the answer was.
        let _ = s.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = s.shutdown().await;
        verdict.map_err(fail)
    }
}

/// The PostgreSQL check's reading of the server's answer to the StartupMessage, one
/// message at a time (pure, so the fuzz target runs the same code as the check).
pub struct PgLogin {
    has_user: bool,
    steps: usize,
}

impl PgLogin {
    pub fn new(has_user: bool) -> Self {
        PgLogin { has_user, steps: 0 }
    }

    /// `None`: read another message; else the verdict on the login.
    pub fn on_message(&mut self, kind: u8, body: &[u8]) -> Option<Result<(), DbRefusal>> {
        // AuthenticationOk (R, code 0) is followed by the session start: keep reading
        // until ReadyForQuery or an error (an unknown database, no free slots, ...).
        let more = (kind == b'R' && body.get(..4) == Some(&[0u8, 0, 0, 0][..]))
            || matches!(kind, b'S' | b'K' | b'N');
        if more && self.steps < 64 {
            self.steps += 1;
            return None;
        }
        Some(match kind {
            // An authentication request, or a finished login (ReadyForQuery).
            b'R' | b'Z' => Ok(()),
            b'E' => {
                let code = error_field(body, b'C').unwrap_or_default();
                if code == "57P03" {
                    Err(DbRefusal::NotAccepting)
                } else if self.has_user {
                    Err(DbRefusal::LoginRefused(
                        error_field(body, b'M').unwrap_or(code),
                    ))
                } else {
                    Ok(())
                }
            }
            other => Err(DbRefusal::UnexpectedMessage(other as char)),
        })
    }
}

/// The length of a backend message's body from its 5-byte head (type, length), capped.
fn pg_body_len(head: &[u8; 5]) -> usize {
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    len.saturating_sub(4).min(64 * 1024)
}

/// The PostgreSQL check's verdict on `answer`, the bytes a server sent back to the
/// StartupMessage, framed as `read_message` frames them. For the fuzz target and tests.
pub fn parse_pg_answer(answer: &[u8], has_user: bool) -> Result<(), DbRefusal> {
    let mut login = PgLogin::new(has_user);
    let mut rest = answer;
    loop {
        let Some((head, tail)) = rest.split_first_chunk::<5>() else {
            return Err(DbRefusal::NoAnswer);
        };
        let len = pg_body_len(head);
        let Some(body) = tail.get(..len) else {
            return Err(DbRefusal::ShortAnswer);
        };
        if let Some(verdict) = login.on_message(head[0], body) {
            return verdict;
        }
        rest = &tail[len..];
    }
}

/// One backend message: its type byte and body.
async fn read_message(s: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head)
        .await
        .map_err(|e| fail(format!("no answer: {e}")))?;
    let mut body = vec![0u8; pg_body_len(&head)];
    s.read_exact(&mut body)
        .await
        .map_err(|e| fail(format!("short answer: {e}")))?;
    Ok((head[0], body))
}

/// A field (`C` code, `M` message) of an ErrorResponse body.
fn error_field(body: &[u8], field: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0)?;
        if kind == field {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

#[async_trait]
impl HealthCheck for PostgresCheck {
    /// Bounded as a whole by the health loop (`health_check.timeout`).
    async fn check(&self, target: &LbBackend) -> Result<()> {
        self.probe(target).await
    }

    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}

/// MySQL / MariaDB: needs the server's handshake (protocol 10; an error packet such as
/// "host is blocked" is unhealthy), answers it with a handshake response for `user`
/// (no password), reads the result and sends COM_QUIT. With a configured user the login
/// must succeed; without one, any answer to the handshake is healthy.
pub struct MysqlCheck {
    pub user: Option<String>,
    pub timeout: Duration,
    /// As for `PostgresCheck`.
    pub proxy_header: Option<Vec<u8>>,
}

async fn read_packet(s: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .await
        .map_err(|e| fail(format!("read: {e}")))?;
    let (len, seq) = mysql_head(&head);
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)
        .await
        .map_err(|e| fail(format!("read: {e}")))?;
    Ok((seq, payload))
}

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut p = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
    p.extend_from_slice(payload);
    p
}

impl MysqlCheck {
    async fn probe(&self, target: &LbBackend) -> Result<()> {
        let mut s = connect(target, self.timeout, self.proxy_header.as_deref()).await?;
        let (seq, greeting) = read_packet(&mut s).await?;
        mysql_greeting(&greeting).map_err(fail)?;
        // HandshakeResponse41: CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION.
        let caps: u32 = 0x0000_0001 | 0x0000_0200 | 0x0000_8000;
        let mut resp = Vec::new();
        resp.extend_from_slice(&caps.to_le_bytes());
        resp.extend_from_slice(&(16u32 * 1024 * 1024).to_le_bytes());
        resp.push(33); // utf8_general_ci
        resp.extend_from_slice(&[0u8; 23]);
        resp.extend_from_slice(
            self.user
                .as_deref()
                .unwrap_or("switchyard_health")
                .as_bytes(),
        );
        resp.push(0);
        resp.push(0); // empty auth response
        s.write_all(&packet(seq.wrapping_add(1), &resp))
            .await
            .map_err(|e| fail(format!("write: {e}")))?;
        let answer = read_packet(&mut s).await.map(|(_, p)| p.first().copied());
        // COM_QUIT: the session ends cleanly, never as an aborted connection.
        let _ = s.write_all(&packet(0, &[0x01])).await;
        let _ = s.shutdown().await;
        mysql_login(answer?, self.user.as_deref()).map_err(fail)
    }
}

/// The MySQL check's reading of the server's first packet (its payload): a protocol-10
/// handshake, else why not.
pub fn mysql_greeting(greeting: &[u8]) -> Result<(), DbRefusal> {
    match greeting.first() {
        Some(0x0a) => Ok(()),
        Some(0xff) => {
            let msg = String::from_utf8_lossy(greeting.get(3..).unwrap_or_default()).into_owned();
            Err(DbRefusal::ServerRefused(msg))
        }
        _ => Err(DbRefusal::NotMysql),
    }
}

/// The verdict on the server's answer to the handshake response: the first byte of its
/// payload (OK 0x00, auth switch 0xfe, error 0xff, ...).
fn mysql_login(answer: Option<u8>, user: Option<&str>) -> Result<(), DbRefusal> {
    match (answer, user) {
        (Some(0x00), _) => Ok(()),
        (_, None) => Ok(()),
        (Some(0xfe), Some(_)) => Err(DbRefusal::NeedsNativeLogin),
        (_, Some(user)) => Err(DbRefusal::UserRefused(user.to_string())),
    }
}

/// The 4-byte packet head: the payload length (capped) and the sequence number.
fn mysql_head(head: &[u8; 4]) -> (usize, u8) {
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    (len.min(64 * 1024), head[3])
}

/// The MySQL check's verdict on `exchange`, the bytes a server sent: its greeting packet
/// then its answer to the handshake response, framed as `read_packet` frames them. For
/// the fuzz target and tests.
pub fn parse_mysql_exchange(exchange: &[u8], user: Option<&str>) -> Result<(), DbRefusal> {
    let mut rest = exchange;
    let mut next = || -> Result<&[u8], DbRefusal> {
        let Some((head, tail)) = rest.split_first_chunk::<4>() else {
            return Err(DbRefusal::Truncated);
        };
        let (len, _) = mysql_head(head);
        let Some(payload) = tail.get(..len) else {
            return Err(DbRefusal::Truncated);
        };
        rest = &tail[len..];
        Ok(payload)
    };
    mysql_greeting(next()?)?;
    mysql_login(next()?.first().copied(), user)
}

#[async_trait]
impl HealthCheck for MysqlCheck {
    /// Bounded as a whole by the health loop (`health_check.timeout`).
    async fn check(&self, target: &LbBackend) -> Result<()> {
        self.probe(target).await
    }

    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_message_is_well_formed() {
        let c = PostgresCheck {
            user: Some("u".into()),
            database: None,
            timeout: Duration::from_secs(1),
            proxy_header: None,
        };
        let m = c.startup_message();
        assert_eq!(
            u32::from_be_bytes([m[0], m[1], m[2], m[3]]) as usize,
            m.len()
        );
        assert_eq!(&m[4..8], &196608u32.to_be_bytes());
        assert!(m.ends_with(b"\0\0"));
    }

    #[test]
    fn error_fields() {
        let body = b"SFATAL\0C57P03\0Mstarting up\0\0";
        assert_eq!(error_field(body, b'C').as_deref(), Some("57P03"));
        assert_eq!(error_field(body, b'M').as_deref(), Some("starting up"));
        assert_eq!(error_field(body, b'X'), None);
    }

    fn pg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn postgres_answers() {
        // Asked for a password (MD5): healthy with or without a user.
        let md5 = pg(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]);
        assert_eq!(parse_pg_answer(&md5, true), Ok(()));
        // AuthenticationOk, a parameter, then ReadyForQuery.
        let mut ok = pg(b'R', &[0, 0, 0, 0]);
        ok.extend(pg(b'S', b"server_version\x0017\0"));
        ok.extend(pg(b'Z', b"I"));
        assert_eq!(parse_pg_answer(&ok, true), Ok(()));
        let starting = pg(b'E', b"SFATAL\0C57P03\0Mstarting up\0\0");
        assert!(parse_pg_answer(&starting, false).is_err());
        let no_role = pg(b'E', b"SFATAL\0C28000\0Mno such role\0\0");
        assert_eq!(parse_pg_answer(&no_role, false), Ok(()));
        assert_eq!(
            parse_pg_answer(&no_role, true),
            Err(DbRefusal::LoginRefused("no such role".into()))
        );
        // Cut short, or never-ending notices: an answer, never a hang or a panic.
        assert!(parse_pg_answer(&ok[..7], true).is_err());
        let notices: Vec<u8> = (0..100).flat_map(|_| pg(b'N', b"\0")).collect();
        assert!(parse_pg_answer(&notices, true).is_err());
    }

    fn my(seq: u8, payload: &[u8]) -> Vec<u8> {
        packet(seq, payload)
    }

    #[test]
    fn mysql_answers() {
        let mut ok = my(0, b"\x0a8.0.36\0rest");
        ok.extend(my(2, &[0x00, 0, 0, 2, 0, 0, 0]));
        assert_eq!(parse_mysql_exchange(&ok, Some("u")), Ok(()));
        let mut switch = my(0, b"\x0a11.4\0");
        switch.extend(my(2, b"\xfemysql_native_password\0"));
        assert_eq!(parse_mysql_exchange(&switch, None), Ok(()));
        assert!(parse_mysql_exchange(&switch, Some("u")).is_err());
        let blocked = my(0, b"\xff\x69\x04Host is blocked");
        assert_eq!(
            parse_mysql_exchange(&blocked, None),
            Err(DbRefusal::ServerRefused("Host is blocked".into()))
        );
        assert!(mysql_greeting(&[0xff]).is_err());
        assert!(mysql_greeting(b"").is_err());
        assert!(parse_mysql_exchange(&ok[..3], None).is_err());
    }
}
