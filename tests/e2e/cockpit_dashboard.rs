//! Dashboard v2 in a real headless Chromium driven over the DevTools protocol: the page
//! shows the last minute of traffic from `/api/v1/stats`, follows a change made through
//! the API within 5 s, a Drain button pressed in the page (its confirmation accepted)
//! drains the backend in the pool, and a read-only token sees no actions. Screenshots go
//! to target/cockpit-artefacts/ (SWITCHYARD_DASHBOARD_PNG=path keeps one elsewhere too).
//!
//! Chromium comes from Debian's `chromium` package; without it the test prints SKIP.
use crate::common::config::*;
use crate::common::*;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";
const FULL: &str = "dash-full-6d1";
const READ_ONLY: &str = "dash-ro-2c8";

/// A headless Chromium with a DevTools port, killed with its process group on drop.
struct Chromium(Child);

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One page's DevTools session.
struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::Text(msg.into())).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let frame = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
                .await
                .expect("DevTools answer")
                .expect("DevTools stream")
                .unwrap();
            if let Message::Text(t) = frame {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == json!(id) {
                    return v;
                }
            }
        }
    }

    /// Evaluates `js` in the page and returns its value.
    async fn eval(&mut self, js: &str) -> Value {
        let v = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        v["result"]["result"]["value"].clone()
    }

    /// Polls `js` until it is true (`limit` at most); how long it took.
    async fn until(&mut self, js: &str, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.eval(js).await == json!(true) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn screenshot(&mut self, path: &Path) {
        let v = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let data = v["result"]["data"].as_str().expect("screenshot data");
        std::fs::write(path, base64_decode(data)).unwrap();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    } as u32;
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Starts Chromium on about:blank and opens a DevTools session on its page.
async fn open_browser(profile: &Path, width: u32) -> (Chromium, Page) {
    let port = listen_port();
    let child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--remote-debugging-port={port}"))
        .arg(format!(
            "--user-data-dir={}",
            profile.join("profile").display()
        ))
        .arg(format!("--window-size={width},1000"))
        .arg("about:blank")
        .env("HOME", profile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(profile.join("chromium.log")).unwrap(),
        ))
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let browser = Chromium(child);
    let mut ws_url = None;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let list: Value = serde_json::from_str(
                &request(
                    port,
                    "GET",
                    "/json/list",
                    &[("Host", &format!("127.0.0.1:{port}"))],
                    b"",
                )
                .body,
            )
            .unwrap_or(Value::Null);
            ws_url = list.as_array().and_then(|l| {
                l.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
            });
            if ws_url.is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ws_url = ws_url.unwrap_or_else(|| {
        panic!(
            "no DevTools page; log:\n{}",
            std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default()
        )
    });
    let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap_or_else(|e| panic!("DevTools {ws_url}: {e}"));
    let mut page = Page { ws, next: 0 };
    page.call("Page.enable", json!({})).await;
    (browser, page)
}

fn artefacts() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cockpit-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_dashboard_shows_live_stats_and_its_drain_button_drains_the_backend() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!("SKIP: {CHROMIUM} is missing (Debian package `chromium`)");
        return;
    }
    let [a, b] = Backend::start_each(["a", "b"]);
    let (admin, web) = (listen_port(), listen_port());
    let config = with(
        web_config(
            web,
            json!([pool("web", &[a.address(), b.address()])]),
            json!([route("site", "web")]),
        ),
        with(
            admin_on(admin, &[FULL]),
            json!({ "admin": { "read_only_tokens": [READ_ONLY] } }),
        ),
    );
    let _sy = Switchyard::start_config(&config, &[admin, web]);
    for _ in 0..10 {
        assert_eq!(get(web, "/").status, 200);
    }
    let api = |method: &str, path: &str, body: &str| {
        let auth = format!("Bearer {FULL}");
        request(
            admin,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    };
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_browser, mut page) = open_browser(profile.path(), 1280).await;
        let url = format!("http://127.0.0.1:{admin}/");
        page.call("Page.navigate", json!({"url": url})).await;
        // The page asks for the token (401); give it one as the prompt would.
        assert!(page.until("!!document.getElementById('auth')", Duration::from_secs(10)).await.is_some());
        page.eval(&format!("sessionStorage.setItem('switchyard_token', '{FULL}'); location.reload(); true")).await;

        // Live stats: the route with its ten requests.
        let stats = "(() => { const r = document.querySelector('#t-routes tr[data-route=\"site\"]'); return !!r && r.cells[2].textContent === '10'; })()";
        assert!(page.until(stats, Duration::from_secs(10)).await.is_some(), "stats never rendered: {}", page.eval("document.body.innerText").await);
        assert_eq!(page.eval("document.getElementById('actions').hidden").await, json!(false));
        page.screenshot(&artefacts().join("dashboard-admin.png")).await;
        if let Ok(p) = std::env::var("SWITCHYARD_DASHBOARD_PNG") {
            page.screenshot(Path::new(&p)).await;
        }

        // A change through the API shows within 5 s.
        let path_b = format!("/api/v1/pools/web/backends/{}", b.address());
        assert_eq!(api("PATCH", &path_b, r#"{"weight":9}"#).status, 200);
        let weight = format!("(() => {{ const r = document.querySelector('tr[data-action=\"web/{}\"]'); return !!r && r.cells[2].textContent === '9'; }})()", b.address());
        let took = page.until(&weight, Duration::from_secs(5)).await;
        assert!(took.is_some(), "the new weight did not show within 5 s");

        // The Drain button of backend a, its confirmation accepted, drains it.
        let click = format!("window.confirm = () => true; document.querySelector('tr[data-action=\"web/{}\"] button.drain').click(); true", a.address());
        assert_eq!(page.eval(&click).await, json!(true));
        let drained = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            let v: Value = serde_json::from_str(&api("GET", "/api/v1/pools/web", "").body).unwrap();
            v["backends"].as_array().unwrap().iter().any(|x| x["address"] == a.address() && x["draining"] == json!(true))
        });
        assert!(drained, "the page's Drain did not drain {}", a.address());
        let shown = format!("(() => {{ const r = document.querySelector('tr[data-action=\"web/{}\"]'); return !!r && r.cells[3].textContent === 'draining'; }})()", a.address());
        assert!(page.until(&shown, Duration::from_secs(5)).await.is_some());
        // Traffic now avoids it.
        let before = a.count();
        for _ in 0..6 {
            assert_eq!(get(web, "/").status, 200);
        }
        assert_eq!(a.count(), before, "a drained backend gets no new request");

        // A read-only token: stats yes, actions no.
        page.eval(&format!("sessionStorage.setItem('switchyard_token', '{READ_ONLY}'); location.reload(); true")).await;
        let ro = "document.getElementById('ro-note').hidden === false && document.getElementById('actions').hidden === true && !!document.querySelector('#t-routes tr[data-route=\"site\"]')";
        assert!(page.until(ro, Duration::from_secs(10)).await.is_some(), "read-only view: {}", page.eval("document.body.innerText").await);
        page.screenshot(&artefacts().join("dashboard-read-only.png")).await;

        // Readable on a phone: a 390 px wide viewport still shows the traffic cards.
        page.call("Emulation.setDeviceMetricsOverride", json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true})).await;
        let fits = "document.getElementById('t-rate').getBoundingClientRect().right <= 390";
        assert!(page.until(fits, Duration::from_secs(5)).await.is_some());
        page.screenshot(&artefacts().join("dashboard-phone.png")).await;
    });
}
