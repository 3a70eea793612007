//! A private Redis server on 127.0.0.1 for the cluster and rate-limit tests.

use super::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private Redis server on 127.0.0.1 (`--save '' --appendonly no`), in a temporary
/// directory; stopped on drop.
pub struct Redis {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    /// Starts an instance, or prints a SKIP line and returns `None` when redis-server is
    /// not installed (CI installs `redis-server`).
    pub fn start() -> Option<Redis> {
        let dirs = ["/usr/bin", "/usr/local/bin", "/usr/sbin"];
        let Some(bin) = find_program(&["redis-server"], &dirs) else {
            eprintln!("SKIP: redis-server not found (apt-get install redis-server)");
            return None;
        };
        let mut r = Redis {
            port: listen_port(),
            bin,
            dir: tempfile::tempdir().expect("tempdir for redis"),
            child: None,
        };
        r.launch();
        Some(r)
    }

    /// Starts the server (again) on the same port and waits until it answers PING
    /// (10 s at most).
    pub fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("redis log");
        let child = Command::new(&self.bin)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let what = format!("redis-server on {}", self.port);
        await_server(
            self,
            &what,
            (Duration::from_secs(10), Duration::from_millis(50)),
            |r| &mut r.child,
            |r| r.command(&["PING"]).is_ok_and(|pong| pong == "+PONG"),
            Redis::log,
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Sends one command (RESP) and returns the answer: a status, error or integer line
    /// as sent (`+PONG`, `-ERR …`, `:1`), or a bulk string's content (`(nil)` for none).
    /// Arrays are not supported. 2 s timeouts.
    pub fn command(&self, args: &[&str]) -> Result<String, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut out: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(end) = out.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&out[..end]).to_string();
                match line.strip_prefix('$') {
                    None => return Ok(line),
                    Some(len) => {
                        let len: i64 = len.parse().map_err(|_| format!("bad reply {line:?}"))?;
                        if len < 0 {
                            return Ok("(nil)".to_string());
                        }
                        let len = len as usize;
                        if out.len() >= end + 2 + len {
                            return Ok(
                                String::from_utf8_lossy(&out[end + 2..end + 2 + len]).to_string()
                            );
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no complete reply: {:?}",
                    String::from_utf8_lossy(&out)
                ));
            }
            match s.read(&mut chunk) {
                Ok(0) => return Err("connection closed".to_string()),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// A field of `INFO section` (e.g. `connected_clients` in `clients`), if present.
    pub fn info(&self, section: &str, field: &str) -> Option<String> {
        let text = self.command(&["INFO", section]).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            assert!(send_signal(pid, "-STOP"), "SIGSTOP redis");
        }
    }

    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            assert!(send_signal(pid, "-CONT"), "SIGCONT redis");
        }
    }

    /// Stops the server (SIGKILL, like a crash) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
