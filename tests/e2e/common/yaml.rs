//! YAML fragments for test configurations (`server:`, listeners, pools, routes).

/// Standard `server:` and `log:` sections for tests: files in `{dir}`, access log to a file.
pub const TEST_SERVER: &str = "
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

/// TEST_SERVER with `keys` (server keys, each line indented by two spaces and ending in
/// a newline) added to its `server:` section.
pub fn test_server_with(keys: &str) -> String {
    assert!(
        TEST_SERVER.contains("\nserver:\n"),
        "TEST_SERVER changed shape"
    );
    TEST_SERVER.replacen("\nserver:\n", &format!("\nserver:\n{keys}"), 1)
}

/// A plaintext `listeners:` entry `name` on 127.0.0.1:`port`.
pub fn listener_yaml(name: &str, port: u16) -> String {
    format!("  - name: {name}\n    listen: 127.0.0.1:{port}\n")
}

/// A TLS `listeners:` entry `name` on 127.0.0.1:`port` serving one certificate (paths).
pub fn tls_listener_yaml(name: &str, port: u16, cert_file: &str, key_file: &str) -> String {
    format!(
        "{}    tls:\n      certificates:\n        - cert_file: {cert_file}\n          key_file: {key_file}\n",
        listener_yaml(name, port)
    )
}

/// A `pools:` entry `name` with `keys` (pool keys, each line indented by four spaces)
/// over one backend per address.
pub fn pool_yaml(name: &str, keys: &str, addresses: &[String]) -> String {
    let plain: Vec<(String, &str)> = addresses.iter().map(|a| (a.clone(), "")).collect();
    pool_yaml_with_backend_keys(name, keys, &plain)
}

/// Like `pool_yaml`, with backends given as (address, extra backend keys, one
/// `key: value` per line).
pub fn pool_yaml_with_backend_keys(name: &str, keys: &str, backends: &[(String, &str)]) -> String {
    let mut s = format!("  - name: {name}\n{keys}    backends:\n");
    for (address, extra) in backends {
        s.push_str(&format!("      - address: {address}\n"));
        for line in extra.lines().map(str::trim).filter(|l| !l.is_empty()) {
            s.push_str(&format!("        {line}\n"));
        }
    }
    s
}

/// A whole configuration: `head` (TEST_SERVER and any other top-level sections), then
/// the `listeners:`, `pools:` and `routes:` lists with the given entries.
pub fn config_yaml(head: &str, listeners: &str, pools: &str, routes: &str) -> String {
    format!("{head}listeners:\n{listeners}pools:\n{pools}routes:\n{routes}")
}
