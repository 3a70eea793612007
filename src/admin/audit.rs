//! The admin audit log (`admin.audit_log`, SPEC §14): one JSON line per change asked
//! for through the API (ts, actor, client_ip, method, path, body with secrets
//! redacted, status). Each line is one `write` on a file opened for appending, so lines
//! never interleave; the file is reopened after SIGUSR1 like the access log.

use super::roles::Actor;
use crate::observe::access_log::{reopen_generation, timestamp};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

const REDACTED: &str = "<redacted>";
/// A body that is not JSON is kept as text up to this many bytes.
const MAX_TEXT_BODY: usize = 1024;

/// One change request and its answer.
pub struct Change<'a> {
    pub actor: &'a Actor,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
    pub status: u16,
}

struct Open {
    path: PathBuf,
    generation: u64,
    file: File,
}

/// The writer; the file is opened on the first change and follows reloads of
/// `admin.audit_log`.
#[derive(Default)]
pub struct AuditLog {
    open: Mutex<Option<Open>>,
}

impl AuditLog {
    /// Appends the line for `change` to `path`. Admin changes are rare and the file is
    /// local: written synchronously, so the answer is sent after its line is written.
    pub fn record(&self, path: &Path, change: &Change<'_>) {
        let mut line = line(change).to_string().into_bytes();
        line.push(b'\n');
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = reopen_generation();
        let current = open
            .as_ref()
            .is_some_and(|o| o.path == path && o.generation == generation);
        if !current {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(file) => {
                    *open = Some(Open {
                        path: path.to_path_buf(),
                        generation,
                        file,
                    })
                }
                Err(e) => {
                    log::error!("cannot open the audit log {}: {e}", path.display());
                    *open = None;
                    return;
                }
            }
        }
        if let Some(o) = open.as_mut() {
            if let Err(e) = o.file.write_all(&line) {
                log::error!("cannot write the audit log {}: {e}", path.display());
            }
        }
    }
}

/// The JSON line of one change.
pub fn line(c: &Change<'_>) -> Value {
    json!({
        "ts": timestamp(),
        "actor": c.actor.audit_value(),
        "client_ip": c.client.map(|ip| ip.to_string()),
        "method": c.method,
        "path": c.path,
        "body": body_value(c.body),
        "status": c.status,
    })
}

/// The request body as JSON with secret-looking fields redacted; null when empty; a
/// non-JSON body as (shortened) text.
fn body_value(body: &[u8]) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            redact(&mut v);
            v
        }
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(MAX_TEXT_BODY)]);
            Value::String(text.into_owned())
        }
    }
}

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "token",
        "password",
        "secret",
        "authorization",
        "credential",
        "private_key",
        "key_file",
    ]
    .iter()
    .any(|s| key.contains(s))
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => redact_map(map),
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn redact_map(map: &mut Map<String, Value>) {
    for (k, v) in map.iter_mut() {
        if is_secret(k) {
            *v = Value::String(REDACTED.into());
        } else {
            redact(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_bodies_are_redacted() {
        let v = body_value(br#"{"weight":5,"auth":{"Token":"x","nested":[{"password":"p"}]}}"#);
        assert_eq!(
            v,
            json!({"weight":5,"auth":{"Token":REDACTED,"nested":[{"password":REDACTED}]}})
        );
        assert_eq!(body_value(b""), Value::Null);
        assert_eq!(body_value(b"not json"), json!("not json"));
    }

    #[test]
    fn lines_are_appended_and_follow_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::default();
        let actor = Actor::Token(0);
        let change = Change {
            actor: &actor,
            client: Some("127.0.0.1".parse().unwrap()),
            method: "PATCH",
            path: "/api/v1/pools/web/backends/a:1",
            body: br#"{"draining":true}"#,
            status: 200,
        };
        log.record(&path, &change);
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        log.record(&path, &change); // still the renamed file: no SIGUSR1 yet
        crate::observe::access_log::reopen_files();
        log.record(&path, &change);
        let old = std::fs::read_to_string(dir.path().join("audit.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 2);
        assert_eq!(new.lines().count(), 1);
        let v: Value = serde_json::from_str(new.trim()).unwrap();
        assert_eq!(v["actor"], json!(0));
        assert_eq!(v["body"], json!({"draining": true}));
        assert_eq!(v["status"], json!(200));
        assert_eq!(v["client_ip"], json!("127.0.0.1"));
    }
}
