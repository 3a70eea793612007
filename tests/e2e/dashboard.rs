//! The admin dashboard (SPEC §5, `GET /`): a static, self-contained page that a real
//! browser (Debian's headless Chromium) renders into one section per pool and one row
//! per backend, marked healthy or unhealthy from the API; with tokens configured and
//! none given, the page asks for one.
//!
//! Chromium comes from Debian's `chromium` package; without /usr/bin/chromium the browser
//! tests print SKIP and return. Set SWITCHYARD_DASHBOARD_PNG=path to keep the screenshot.
use crate::common::config::*;
use crate::common::*;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium run in its own process group; the whole group is killed on drop.
struct Browser {
    child: Child,
}

impl Browser {
    /// Runs chromium with the test flags plus `extra` on `url`; returns stdout once it
    /// exits (90 s at most, then the group is killed and the test fails).
    fn run(profile: &Path, extra: &[String], url: &str) -> String {
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.join("profile").display()
        ))
        .arg("--virtual-time-budget=6000")
        .args(extra)
        .arg(url)
        .env("HOME", profile)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(profile.join("chromium.log")).expect("chromium log"),
        ))
        .process_group(0);
        let child = cmd.spawn().expect("start chromium");
        let mut browser = Browser { child };
        let mut stdout = browser.child.stdout.take().expect("chromium stdout");
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(_)) = browser.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                drop(browser);
                panic!(
                    "chromium did not finish within 90 s; log:\n{}",
                    std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(browser);
        reader.join().unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The wrapper script execs chromium, so the group id is this child's pid.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have_chromium() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    eprintln!("SKIP: {CHROMIUM} is missing (Debian package `chromium`)");
    false
}

/// The attributes of every start tag `<tag ...>` in `html`.
fn start_tags(html: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag}");
    let mut tags = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        if !after.starts_with([' ', '>', '\n', '\t', '/']) {
            rest = after;
            continue;
        }
        let end = after.find('>').unwrap_or(after.len());
        tags.push(attributes(&after[..end]));
        rest = &after[end..];
    }
    tags
}

/// `name="value"` pairs of one start tag (values unescaped for &amp; &quot; &lt; &gt;).
fn attributes(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = rest[..name_end].trim_end_matches('/').to_string();
        rest = &rest[name_end..];
        let value = if let Some(r) = rest.strip_prefix("=\"") {
            let close = r.find('"').unwrap_or(r.len());
            let v = &r[..close];
            rest = r.get(close + 1..).unwrap_or("");
            v.replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        } else {
            String::new()
        };
        if !name.is_empty() {
            out.insert(name, value);
        }
        rest = rest.trim_start();
    }
    out
}

fn classes(tag: &BTreeMap<String, String>) -> Vec<&str> {
    tag.get("class")
        .map(|c| c.split_whitespace().collect())
        .unwrap_or_default()
}

/// An admin listener with no tokens (loopback), two pools; `other` holds a backend on a
/// closed port that the 200 ms TCP check takes out.
struct Setup {
    sy: Switchyard,
    admin: u16,
    web: u16,
    backends: Vec<(&'static str, String)>,
    dead: String,
    _a: Backend,
    _b: Backend,
    _c: Backend,
}

/// `tokens` are `admin.tokens`; none leaves the key out.
fn start(tokens: &[&str]) -> Setup {
    let [a, b, c] = Backend::start_each(["a", "b", "c"]);
    let dead = format!("127.0.0.1:{}", closed_port());
    let (admin, web) = (listen_port(), listen_port());
    let check = json!({
        "algorithm": "least_conn",
        "health_check": {
            "interval": "200ms",
            "timeout": "200ms",
            "healthy_threshold": 1,
            "unhealthy_threshold": 1,
        },
    });
    let pools = json!([
        pool("web", &[a.address(), b.address()]),
        with(pool("other", &[c.address(), dead.clone()]), check),
    ]);
    let routes = json!([
        { "name": "other", "path_prefix": "/other", "pool": "other" },
        route("all", "web"),
    ]);
    let config = with(web_config(web, pools, routes), admin_on(admin, tokens));
    let sy = Switchyard::start_config(&config, &[admin, web]);
    Setup {
        sy,
        admin,
        web,
        backends: vec![
            ("web", a.address()),
            ("web", b.address()),
            ("other", c.address()),
            ("other", dead.clone()),
        ],
        dead,
        _a: a,
        _b: b,
        _c: c,
    }
}

/// Waits until GET /api/v1/pools (no token) shows `dead` with healthy:false.
fn wait_unhealthy(s: &Setup) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(s.admin, "/api/v1/pools");
        assert_eq!(r.status, 200, "no token needed without admin.tokens: {r:?}");
        let v: Value = serde_json::from_str(&r.body).expect("JSON");
        let down = v["pools"].as_array().is_some_and(|ps| {
            ps.iter()
                .flat_map(|p| p["backends"].as_array().cloned().unwrap_or_default())
                .any(|b| b["address"] == s.dead.as_str() && b["healthy"] == false)
        });
        if down {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the backend on a closed port never became unhealthy: {}\n{}",
            r.body,
            s.sy.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_page_is_static_html_with_no_external_reference() {
    let s = start(&["dash-t0ken"]);
    let r = get(s.admin, "/");
    assert_eq!(r.status, 200, "GET / needs no token: {r:?}");
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/html"), "Content-Type {ct:?}");
    let html = &r.body;
    assert!(html.to_ascii_lowercase().contains("<html"), "{html}");
    for tag in [
        "script", "link", "img", "a", "iframe", "form", "source", "use", "image",
    ] {
        for attrs in start_tags(html, tag) {
            for key in ["src", "href", "action", "xlink:href"] {
                if let Some(v) = attrs.get(key) {
                    let v = v.trim().to_ascii_lowercase();
                    assert!(
                        !(v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//")),
                        "<{tag} {key}={v:?}> points outside the admin listener"
                    );
                }
            }
        }
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page references an external URL"
    );
    // Static: no data (no backend address, no pool name) in the page itself.
    for (pool, addr) in &s.backends {
        assert!(
            !html.contains(addr.as_str()),
            "{addr} is in the static page"
        );
        assert!(!html.contains(&format!("data-pool=\"{pool}\"")));
    }
    let _ = s.web;
}

#[test]
fn chromium_renders_every_pool_and_backend_with_its_health() {
    if !have_chromium() {
        return;
    }
    let s = start(&[]);
    // Some traffic, so the counters are not all zero.
    for _ in 0..6 {
        assert_eq!(get(s.web, "/").status, 200);
    }
    wait_unhealthy(&s);
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("http://127.0.0.1:{}/", s.admin);
    let dom = Browser::run(profile.path(), &["--dump-dom".to_string()], &url);
    let log = || std::fs::read_to_string(profile.path().join("chromium.log")).unwrap_or_default();
    assert!(
        dom.contains("</html>"),
        "no DOM from chromium; stdout:\n{dom}\nlog:\n{}",
        log()
    );

    let sections: Vec<String> = start_tags(&dom, "section")
        .into_iter()
        .filter_map(|a| a.get("data-pool").cloned())
        .collect();
    assert_eq!(sections, ["web", "other"], "one section per pool:\n{dom}");

    let rows: BTreeMap<String, BTreeMap<String, String>> = start_tags(&dom, "tr")
        .into_iter()
        .filter_map(|a| a.get("data-backend").cloned().map(|b| (b, a)))
        .collect();
    assert_eq!(
        rows.len(),
        s.backends.len(),
        "one row per backend: {:?}\n{dom}",
        rows.keys().collect::<Vec<_>>()
    );
    for (pool, addr) in &s.backends {
        let row = rows
            .get(addr)
            .unwrap_or_else(|| panic!("no row data-backend=\"{addr}\" (pool {pool}):\n{dom}"));
        let cls = classes(row);
        assert_eq!(
            row.get("data-source").map(String::as_str),
            Some("static"),
            "{addr}: the Source column (SPEC §12)"
        );
        if *addr == s.dead {
            assert!(cls.contains(&"unhealthy"), "{addr}: class {cls:?}");
            assert!(!cls.contains(&"healthy"), "{addr}: class {cls:?}");
        } else {
            assert!(cls.contains(&"healthy"), "{addr}: class {cls:?}");
            assert!(!cls.contains(&"unhealthy"), "{addr}: class {cls:?}");
        }
    }
    // The rows sit inside their pool's section.
    let other_at = dom.find("data-pool=\"other\"").expect("other section");
    for (pool, addr) in &s.backends {
        let at = dom.find(&format!("data-backend=\"{addr}\"")).expect("row");
        assert_eq!(
            at > other_at,
            *pool == "other",
            "{addr} is under pool {pool}"
        );
    }
    // The token prompt stays hidden when no token is configured.
    let auth = start_tags(&dom, "form")
        .into_iter()
        .find(|a| a.get("id").map(String::as_str) == Some("auth"))
        .expect("the token form is in the page");
    assert!(
        auth.contains_key("hidden"),
        "no token prompt without tokens: {auth:?}"
    );

    // A screenshot of the same page (kept when SWITCHYARD_DASHBOARD_PNG names a path).
    let png = profile.path().join("dashboard.png");
    Browser::run(
        profile.path(),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,720".to_string(),
            "--hide-scrollbars".to_string(),
        ],
        &url,
    );
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}); log:\n{}", log()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "a PNG screenshot: {} bytes",
        bytes.len()
    );
    if let Ok(keep) = std::env::var("SWITCHYARD_DASHBOARD_PNG") {
        std::fs::copy(&png, &keep).expect("copy the screenshot");
        eprintln!("screenshot kept at {keep}");
    }
}

#[test]
fn chromium_shows_the_token_prompt_when_the_api_answers_401() {
    if !have_chromium() {
        return;
    }
    let s = start(&["dash-t0ken"]);
    assert_eq!(get(s.admin, "/api/v1/pools").status, 401);
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("http://127.0.0.1:{}/", s.admin);
    let dom = Browser::run(profile.path(), &["--dump-dom".to_string()], &url);
    assert!(dom.contains("</html>"), "no DOM from chromium:\n{dom}");
    let auth = start_tags(&dom, "form")
        .into_iter()
        .find(|a| a.get("id").map(String::as_str) == Some("auth"))
        .unwrap_or_else(|| panic!("no token form:\n{dom}"));
    assert!(
        !auth.contains_key("hidden"),
        "the token prompt is shown after a 401: {auth:?}\n{dom}"
    );
    let input = start_tags(&dom, "input")
        .into_iter()
        .find(|a| a.get("id").map(String::as_str) == Some("token"))
        .expect("token input");
    assert_eq!(input.get("type").map(String::as_str), Some("password"));
    assert!(
        dom.contains("Token required"),
        "status says a token is required"
    );
    assert!(
        !start_tags(&dom, "section")
            .iter()
            .any(|a| a.contains_key("data-pool")),
        "no pool data without a token:\n{dom}"
    );
}
