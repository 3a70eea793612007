//! `switchyard -t` reports every configuration error class as
//! `PATH:LINE:COL: key.path: message` (SPEC §1, §3) and exits 1; a valid file exits 0.
//! Expected positions are computed from the YAML text each test writes.
use crate::common::*;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The tests' `server:` and `log:` sections as YAML text: this module checks errors by
/// file:line:col, so its configurations stay text.
const TEST_SERVER: &str = "
server:
  threads: 1
  pid_file: {dir}/switchyard.pid
  upgrade_sock: {dir}/upgrade.sock
  grace_period: 1s
  shutdown_timeout: 1s
log:
  level: info
  access_log: {dir}/access.log
";

/// 1-based (line, column) of the start of the `nth` (0-based) occurrence of `needle`.
fn locate(yaml: &str, needle: &str, nth: usize) -> (usize, usize) {
    let offset = yaml
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("test bug: {needle:?} #{nth} not in the YAML"))
        .0;
    let before = &yaml[..offset];
    let line = before.matches('\n').count() + 1;
    let col = offset - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Where the value of the `nth` occurrence of the single-line `key: value` text starts.
fn value_pos(yaml: &str, key_value: &str, nth: usize) -> (usize, usize) {
    let (line, col) = locate(yaml, key_value, nth);
    let skip = key_value
        .find(": ")
        .unwrap_or_else(|| panic!("test bug: {key_value:?} has no ': '"))
        + 2;
    (line, col + skip)
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn assert_invalid(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit code 1; stderr:\n{}",
        stderr_of(out)
    );
}

/// The stderr line starting `{path}:{line}:{col}: {keypath}:` (exit code 1 asserted).
fn error_line(out: &Output, path: &Path, (line, col): (usize, usize), keypath: &str) -> String {
    assert_invalid(out);
    let prefix = format!("{}:{line}:{col}: {keypath}:", path.display());
    let stderr = stderr_of(out);
    stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no stderr line starting with {prefix:?}; stderr:\n{stderr}"))
        .to_string()
}

/// Lines of the form `{path}:LINE:COL: ...` with numeric LINE and COL.
fn error_lines(out: &Output, path: &Path) -> Vec<String> {
    let head = format!("{}:", path.display());
    stderr_of(out)
        .lines()
        .filter(|l| {
            let Some(rest) = l.strip_prefix(&head) else {
                return false;
            };
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().unwrap_or("");
            let col = parts.next().unwrap_or("");
            let tail = parts.next().unwrap_or("");
            !line.is_empty()
                && line.bytes().all(|b| b.is_ascii_digit())
                && !col.is_empty()
                && col.bytes().all(|b| b.is_ascii_digit())
                && tail.starts_with(' ')
        })
        .map(str::to_string)
        .collect()
}

fn assert_valid(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "expected a valid configuration (exit 0); stderr:\n{}",
        stderr_of(out)
    );
}

const LISTENER: &str = "
listeners:
  - name: web
    listen: 127.0.0.1:18080
";

const ROUTE: &str = "
routes:
  - name: all
    pool: web
";

/// One listener, the `pools:` list `pools` and one route `all` to pool `web`.
fn with_pools(pools: &str) -> String {
    format!("{LISTENER}\npools:\n{pools}{ROUTE}")
}

/// A valid file: one listener, one pool `web` with one backend, one route.
fn valid_config() -> String {
    with_pools("  - name: web\n    backends:\n      - address: 127.0.0.1:18081\n")
}

/// `valid_config()` with a `server:` section of `lines` (each indented by 2 spaces).
fn with_server(lines: &str) -> String {
    format!("server:\n{lines}{}", valid_config())
}

/// `valid_config()` with `keys` (indented by 4 spaces) added to its route.
fn with_route_keys(keys: &str) -> String {
    format!("{}\n{keys}", valid_config().trim_end())
}

/// `switchyard -t` on `yaml` must report `keypath` at `at`; returns that error line.
fn expect_error(yaml: &str, at: (usize, usize), keypath: &str) -> String {
    let (out, path, _dir) = check_config(yaml);
    error_line(&out, &path, at, keypath)
}

/// `switchyard -t` on `yaml` must report every (position, key path) of `errors`;
/// returns all of its error lines.
fn expect_errors(yaml: &str, errors: &[((usize, usize), &str)]) -> Vec<String> {
    let (out, path, _dir) = check_config(yaml);
    for (at, keypath) in errors {
        error_line(&out, &path, *at, keypath);
    }
    error_lines(&out, &path)
}

/// `switchyard -t` on `yaml` (with `env`) must exit 0; returns its output.
fn expect_valid(yaml: &str, env: &[(&str, &str)]) -> Output {
    let (out, _path, _dir) = check_config_env(yaml, env);
    assert_valid(&out);
    out
}

#[test]
fn a_valid_configuration_exits_zero() {
    let yaml = "server:
  threads: 2
  grace_period: 5s
  shutdown_timeout: 250ms
  trusted_proxies: [10.0.0.0/8, \"::1/128\"]
log:
  level: warn
  access_log: off
listeners:
  - name: web
    listen: 127.0.0.1:18080
  - name: other
    listen: 127.0.0.1:18090
pools:
  - name: web
    algorithm: least_conn
    backends:
      - address: 127.0.0.1:18081
        weight: 1
      - address: 127.0.0.1:18082
        weight: 1000
      - address: localhost:18083
        backup: true
    retries: 2
    timeouts: { connect: 1s, read: 2m, write: 30s, idle: 1h }
  - name: db
    algorithm: consistent_hash
    hash_key: header:X-User
    backends:
      - address: 127.0.0.1:15432
routes:
  - name: api
    host: [api.example.com, \"*.example.org\"]
    path_prefix: /v1
    methods: [GET, POST]
    pool: web
    allow: [127.0.0.0/8, 192.168.1.1]
    deny: [10.1.0.0/16]
  - name: rest
    listeners: [web, other]
    pool: web
tcp_services:
  - name: pg
    listen: 127.0.0.1:15433
    protocol: postgres
    pool: db
";
    let (out, path, _dir) = check_config(yaml);
    assert_valid(&out);
    assert!(
        error_lines(&out, &path).is_empty(),
        "a valid file printed error lines:\n{}",
        stderr_of(&out)
    );
}

#[test]
fn an_empty_file_is_valid() {
    expect_valid("", &[]);
}

#[test]
fn unknown_top_level_key_is_reported_at_the_key() {
    let yaml = format!("{}listners:\n  - name: typo\n", valid_config());
    let line = expect_error(&yaml, locate(&yaml, "listners:", 0), "listners");
    assert!(line.contains("listners"), "{line}");
}

#[test]
fn unknown_nested_key_is_reported_at_the_key_with_its_path() {
    let yaml = with_pools(
        "  - name: other
    backends:
      - address: 127.0.0.1:18082
  - name: web
    algoritm: least_conn
    backends:
      - address: 127.0.0.1:18081
        wieght: 2
",
    );
    expect_errors(
        &yaml,
        &[
            (locate(&yaml, "algoritm:", 0), "pools[1].algoritm"),
            (locate(&yaml, "wieght:", 0), "pools[1].backends[0].wieght"),
        ],
    );
}

#[test]
fn duplicate_yaml_key_is_reported_at_the_second_key() {
    let yaml = with_pools(
        "  - name: web
    algorithm: random
    algorithm: least_conn
    backends:
      - address: 127.0.0.1:18081
",
    );
    expect_error(&yaml, locate(&yaml, "algorithm:", 1), "pools[0].algorithm");
}

#[test]
fn duplicate_pool_name_is_reported_at_the_second_occurrence() {
    let yaml = with_pools(
        "  - name: web
    backends:
      - address: 127.0.0.1:18081
  - name: web
    backends:
      - address: 127.0.0.1:18082
",
    );
    // Occurrence 0 is the listener's name, 1 the first pool's.
    let line = expect_error(&yaml, value_pos(&yaml, "name: web", 2), "pools[1].name");
    assert!(line.contains("web"), "{line}");
}

#[test]
fn duplicate_listener_name_is_reported_at_the_second_occurrence() {
    let yaml = "
listeners:
  - name: front
    listen: 127.0.0.1:18080
  - name: front
    listen: 127.0.0.1:18090
pools:
  - name: web
    backends:
      - address: 127.0.0.1:18081
routes:
  - name: all
    pool: web
";
    let line = expect_error(yaml, value_pos(yaml, "name: front", 1), "listeners[1].name");
    assert!(line.contains("front"), "{line}");
}

#[test]
fn route_naming_a_missing_pool_is_an_error() {
    let yaml = format!(
        "{}  - name: api
    path_prefix: /api
    pool: nowhere
",
        valid_config()
    );
    let line = expect_error(
        &yaml,
        value_pos(&yaml, "pool: nowhere", 0),
        "routes[1].pool",
    );
    assert!(line.contains("nowhere"), "{line}");
}

#[test]
fn a_pool_used_by_a_route_and_a_tcp_service_is_an_error() {
    let yaml = format!(
        "{}
tcp_services:
  - name: raw
    listen: 127.0.0.1:18099
    pool: web
",
        valid_config()
    );
    let (out, path, _dir) = check_config(&yaml);
    assert_invalid(&out);
    // Either side of the conflict is a fair place to report it.
    let at_service = format!(
        "{}:{}:{}: tcp_services[0].pool:",
        path.display(),
        value_pos(&yaml, "pool: web", 1).0,
        value_pos(&yaml, "pool: web", 1).1
    );
    let at_route = format!(
        "{}:{}:{}: routes[0].pool:",
        path.display(),
        value_pos(&yaml, "pool: web", 0).0,
        value_pos(&yaml, "pool: web", 0).1
    );
    let stderr = stderr_of(&out);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&at_service) || l.starts_with(&at_route)),
        "expected a line starting with {at_service:?} or {at_route:?}; stderr:\n{stderr}"
    );
}

fn pool_with_weight(weight: &str) -> String {
    with_pools(&format!(
        "  - name: web
    backends:
      - address: 127.0.0.1:18082
      - address: 127.0.0.1:18081
        weight: {weight}
"
    ))
}

/// A backend weight of `weight` is reported at its value.
fn assert_weight_is_an_error(weight: &str) {
    let yaml = pool_with_weight(weight);
    expect_error(
        &yaml,
        value_pos(&yaml, &format!("weight: {weight}"), 0),
        "pools[0].backends[1].weight",
    );
}

#[test]
fn weight_zero_is_an_error() {
    assert_weight_is_an_error("0");
}

#[test]
fn weight_1001_is_an_error() {
    assert_weight_is_an_error("1001");
}

#[test]
fn weights_1_and_1000_are_valid() {
    for w in ["1", "1000"] {
        expect_valid(&pool_with_weight(w), &[]);
    }
}

#[test]
fn bad_cidr_in_route_allow_is_an_error() {
    let yaml = with_route_keys("    allow: [10.0.0.0/8, 10.0.0.0/33]\n");
    expect_error(&yaml, locate(&yaml, "10.0.0.0/33", 0), "routes[0].allow[1]");
}

#[test]
fn bad_cidr_in_route_deny_is_an_error() {
    let yaml = with_route_keys("    deny:\n      - 192.168.0.0/16\n      - not-a-cidr\n");
    expect_error(&yaml, locate(&yaml, "not-a-cidr", 0), "routes[0].deny[1]");
}

#[test]
fn bad_cidr_in_trusted_proxies_is_an_error() {
    let yaml = with_server("  trusted_proxies: [300.1.2.0/24]\n");
    expect_error(
        &yaml,
        locate(&yaml, "300.1.2.0/24", 0),
        "server.trusted_proxies[0]",
    );
}

/// `server.deny` (an extension of SPEC §3) is read like a route's `deny`: the same
/// message for the same bad value, at the value's position.
#[test]
fn bad_cidr_in_server_deny_is_an_error_like_in_a_route_deny() {
    let yaml = with_server("  deny: [10.0.0.0/8, 10.0.0.0/33]\n");
    let server = expect_error(&yaml, locate(&yaml, "10.0.0.0/33", 0), "server.deny[1]");

    let yaml = with_route_keys("    deny: [10.0.0.0/33]\n");
    let route = expect_error(&yaml, locate(&yaml, "10.0.0.0/33", 0), "routes[0].deny[0]");
    let message = |line: &str, key: &str| {
        line.split_once(&format!(" {key}: "))
            .map(|(_, m)| m.to_string())
            .unwrap_or_else(|| panic!("no message after {key} in {line:?}"))
    };
    assert_eq!(
        message(&server, "server.deny[1]"),
        message(&route, "routes[0].deny[0]"),
        "the same message as a route's deny"
    );

    expect_valid(
        &with_server("  deny: [10.0.0.0/8, \"2001:db8::/32\", 192.0.2.7]\n"),
        &[],
    );
}

#[test]
fn duration_without_a_unit_is_an_error() {
    let yaml = with_server("  threads: 1\n  grace_period: 5\n");
    expect_error(
        &yaml,
        value_pos(&yaml, "grace_period: 5", 0),
        "server.grace_period",
    );
}

#[test]
fn duration_word_is_an_error() {
    let yaml = with_pools(
        "  - name: web
    backends:
      - address: 127.0.0.1:18081
    timeouts:
      read: 10s
      connect: fast
",
    );
    expect_error(
        &yaml,
        value_pos(&yaml, "connect: fast", 0),
        "pools[0].timeouts.connect",
    );
}

#[test]
fn backend_address_without_port_is_an_error() {
    let yaml = with_pools(
        "  - name: other
    backends:
      - address: 127.0.0.1:18082
  - name: web
    backends:
      - address: \"10.0.0.1\"
      - address: 127.0.0.1:18081
",
    );
    let line = expect_error(
        &yaml,
        locate(&yaml, "\"10.0.0.1\"", 0),
        "pools[1].backends[0].address",
    );
    assert!(
        line.contains("10.0.0.1") && line.contains("host:port"),
        "{line}"
    );
}

#[test]
fn tcp_service_on_an_http_listener_port_is_an_error() {
    let yaml = format!(
        "{LISTENER}
pools:
  - name: web
    backends:
      - address: 127.0.0.1:18081
  - name: db
    backends:
      - address: 127.0.0.1:15432
tcp_services:
  - name: pg
    listen: 127.0.0.1:18080
    pool: db
{ROUTE}"
    );
    expect_error(
        &yaml,
        value_pos(&yaml, "listen: 127.0.0.1:18080", 1),
        "tcp_services[0].listen",
    );
}

#[test]
fn http3_on_a_plaintext_listener_is_an_error_saying_so() {
    let yaml = format!(
        "
listeners:
  - name: web
    listen: 127.0.0.1:18080
    http3: true
pools:
  - name: web
    backends:
      - address: 127.0.0.1:18081
{ROUTE}"
    );
    let line = expect_error(&yaml, locate(&yaml, "http3:", 0), "listeners[0].http3");
    assert!(
        line.contains("HTTP/3") && line.contains("needs TLS"),
        "the error should say HTTP/3 needs TLS: {line}"
    );
}

#[test]
fn env_reference_that_is_set_is_valid() {
    let yaml = with_pools(
        "  - name: web
    backends:
      - address: \"127.0.0.1:${SY_TEST_BACKEND_PORT}\"
        weight: ${SY_TEST_WEIGHT}
",
    );
    expect_valid(
        &yaml,
        &[("SY_TEST_BACKEND_PORT", "18081"), ("SY_TEST_WEIGHT", "7")],
    );
    // The expanded value is typed: a weight of 0 from the environment is an error.
    let (out, path, _dir) = check_config_env(
        &yaml,
        &[("SY_TEST_BACKEND_PORT", "18081"), ("SY_TEST_WEIGHT", "0")],
    );
    error_line(
        &out,
        &path,
        value_pos(&yaml, "weight: ${SY_TEST_WEIGHT}", 0),
        "pools[0].backends[0].weight",
    );
}

#[test]
fn env_reference_expands_into_the_running_configuration() {
    let b = Backend::start("env");
    let port = free_port();
    let yaml = format!(
        "{TEST_SERVER}
listeners:
  - name: web
    listen: \"127.0.0.1:${{SY_TEST_LISTEN_PORT}}\"
pools:
  - name: web
    backends:
      - address: ${{SY_TEST_BACKEND}}
{ROUTE}"
    );
    let port_text = port.to_string();
    let backend = b.address();
    let _sy = Switchyard::start_with_env(
        &yaml,
        &[port],
        &[
            ("SY_TEST_LISTEN_PORT", port_text.as_str()),
            ("SY_TEST_BACKEND", backend.as_str()),
        ],
    );
    let r = get(port, "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("env"), "{r:?}");
}

#[test]
fn env_reference_that_is_unset_is_an_error_naming_it() {
    let var = "SY_TEST_SURELY_UNSET_VARIABLE_9F3A";
    assert!(std::env::var_os(var).is_none(), "{var} must not be set");
    let yaml = with_pools(&format!(
        "  - name: web
    backends:
      - address: \"${{{var}}}:8080\"
"
    ));
    let line = expect_error(
        &yaml,
        locate(&yaml, "\"${", 0),
        "pools[0].backends[0].address",
    );
    assert!(line.contains(var), "the error should name {var}: {line}");
}

#[test]
fn a_list_where_a_mapping_is_expected_is_an_error() {
    let yaml = format!(
        "server: [1, 2]
{LISTENER}
pools:
  - name: web
    backends:
      - address: 127.0.0.1:18081
    timeouts: [1s]
{ROUTE}"
    );
    expect_errors(
        &yaml,
        &[
            (locate(&yaml, "[1, 2]", 0), "server"),
            (locate(&yaml, "[1s]", 0), "pools[0].timeouts"),
        ],
    );
}

#[test]
fn a_scalar_where_a_list_is_expected_is_an_error() {
    let yaml = with_pools("  - name: web\n    backends: { address: 127.0.0.1:18081 }\n");
    expect_error(&yaml, locate(&yaml, "{ address", 0), "pools[0].backends");
}

#[test]
fn several_errors_are_all_reported_at_once() {
    let yaml = format!(
        "server:
  grace_period: fast
  trusted_proxies: [10.0.0.0/99]
{LISTENER}
pools:
  - name: web
    algoritm: random
    backends:
      - address: 127.0.0.1:18081
        weight: 0
{ROUTE}"
    );
    let lines = expect_errors(
        &yaml,
        &[
            (
                value_pos(&yaml, "grace_period: fast", 0),
                "server.grace_period",
            ),
            (locate(&yaml, "10.0.0.0/99", 0), "server.trusted_proxies[0]"),
            (locate(&yaml, "algoritm:", 0), "pools[0].algoritm"),
            (
                value_pos(&yaml, "weight: 0", 0),
                "pools[0].backends[0].weight",
            ),
        ],
    );
    assert_eq!(lines.len(), 4, "expected exactly 4 error lines: {lines:#?}");
}

#[test]
fn reference_errors_are_reported_together_with_value_errors() {
    let yaml = format!(
        "{LISTENER}
pools:
  - name: web
    backends:
      - address: 127.0.0.1:18081
        weight: 0
routes:
  - name: all
    pool: nowhere
"
    );
    let lines = expect_errors(
        &yaml,
        &[
            (
                value_pos(&yaml, "weight: 0", 0),
                "pools[0].backends[0].weight",
            ),
            (value_pos(&yaml, "pool: nowhere", 0), "routes[0].pool"),
        ],
    );
    assert_eq!(lines.len(), 2, "expected exactly 2 error lines: {lines:#?}");
}

#[test]
fn errors_name_the_path_as_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("conf")).expect("mkdir conf");
    let yaml = pool_with_weight("0");
    std::fs::write(dir.path().join("conf/switchyard.yaml"), &yaml).expect("write config");
    let out = Command::new(BIN)
        .args(["-t", "-c", "conf/switchyard.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("run switchyard -t");
    error_line(
        &out,
        Path::new("conf/switchyard.yaml"),
        value_pos(&yaml, "weight: 0", 0),
        "pools[0].backends[1].weight",
    );
}

#[test]
fn hash_key_on_a_round_robin_pool_is_only_a_warning() {
    let yaml = with_pools(
        "  - name: web
    algorithm: round_robin
    hash_key: header:X-User
    backends:
      - address: 127.0.0.1:18081
",
    );
    let stderr = stderr_of(&expect_valid(&yaml, &[]));
    assert!(
        stderr.to_lowercase().contains("warning"),
        "expected a warning on stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("hash_key"),
        "the warning should name hash_key:\n{stderr}"
    );
    // The same key on consistent_hash is used, so no warning about it.
    let out = expect_valid(&yaml.replace("round_robin", "consistent_hash"), &[]);
    assert!(
        !stderr_of(&out).contains("hash_key"),
        "no hash_key warning expected for consistent_hash:\n{}",
        stderr_of(&out)
    );
}

#[test]
fn invalid_configuration_at_start_exits_1_and_never_listens() {
    let port = free_port();
    let yaml = format!(
        "{TEST_SERVER}
listeners:
  - name: web
    listen: 127.0.0.1:{port}
pools:
  - name: web
    backends:
      - address: 127.0.0.1:18081
        weight: 0
{ROUTE}"
    );
    let (dir, path) = write_config(&yaml);
    let text = std::fs::read_to_string(&path).expect("read back config");
    let stderr_path = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Command::new(BIN)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start switchyard");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = None;
    let mut listened = false;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            listened = true;
        }
        if let Ok(Some(s)) = child.try_wait() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("switchyard kept running; stderr:\n{err}"));
    assert_eq!(status.code(), Some(1), "stderr:\n{err}");
    assert!(!listened, "an invalid configuration must never listen");
    let (line, col) = value_pos(&text, "weight: 0", 0);
    let prefix = format!(
        "{}:{line}:{col}: pools[0].backends[0].weight:",
        path.display()
    );
    assert!(
        err.lines().any(|l| l.starts_with(&prefix)),
        "expected {prefix:?} on stderr:\n{err}"
    );
}

/// `cluster.timeout` (an extension of SPEC §3): what a cluster-scope rate limit may add
/// to a request; zero or more than 10 s is refused at the key, and it needs a unit.
#[test]
fn cluster_timeout_is_checked() {
    let cluster = |timeout: &str| {
        format!(
            "cluster:\n  redis: redis://127.0.0.1:6379/0\n  timeout: {timeout}\n{}",
            valid_config()
        )
    };
    for bad in ["0s", "11s"] {
        let yaml = cluster(bad);
        let line = expect_error(&yaml, locate(&yaml, "timeout", 0), "cluster.timeout");
        assert!(line.contains("more than 0 and at most 10s"), "{line}");
    }
    let yaml = cluster("20");
    expect_error(&yaml, value_pos(&yaml, "timeout: 20", 0), "cluster.timeout");
    expect_valid(&cluster("50ms"), &[]);
}
