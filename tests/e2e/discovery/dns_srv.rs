//! `discovery.dns_srv` against a real dnsmasq (`--srv-host`, `--no-resolv`) on
//! 127.0.0.1, named to switchyard with `$SWITCHYARD_NAMESERVER`; dnsmasq is restarted
//! with other records to change the answer, and stopped to take the provider away.

use super::*;
use std::process::{Command, Stdio};

/// One `--srv-host` record: (target host, port, priority, weight).
type Srv = (&'static str, u16, u16, u16);

struct Dnsmasq {
    port: u16,
    guard: Option<ChildGuard>,
}

impl Dnsmasq {
    /// None (with a note) where dnsmasq is not installed and this is not CI.
    fn start(records: &[Srv]) -> Option<Dnsmasq> {
        let Some(_) = find_program(&["dnsmasq"], &["/usr/sbin", "/usr/bin", "/sbin"]) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "dnsmasq is not installed (scripts/test installs it)"
            );
            eprintln!("skipped: dnsmasq is not installed");
            return None;
        };
        let mut d = Dnsmasq {
            port: listen_port(),
            guard: None,
        };
        d.restart(records);
        Some(d)
    }

    fn stop(&mut self) {
        self.guard = None;
    }

    /// (Re)starts dnsmasq on the same port serving `records` (targets are `*.srv.test`,
    /// all at 127.0.0.1).
    fn restart(&mut self, records: &[Srv]) {
        self.stop();
        let dnsmasq =
            find_program(&["dnsmasq"], &["/usr/sbin", "/usr/bin", "/sbin"]).expect("dnsmasq");
        let mut cmd = Command::new(dnsmasq);
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            // A 1 s TTL on every answer (dnsmasq's default is 0).
            "--local-ttl=1",
        ])
        .arg(format!("--port={}", self.port));
        let mut hosts: Vec<&str> = records.iter().map(|r| r.0).collect();
        hosts.sort();
        hosts.dedup();
        for h in hosts {
            cmd.arg(format!("--host-record={h}.srv.test,127.0.0.1"));
        }
        for (host, port, priority, weight) in records {
            cmd.arg(format!(
                "--srv-host=_http._tcp.web.srv.test,{host}.srv.test,{port},{priority},{weight}"
            ));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        self.guard = Some(ChildGuard(child));
        // dnsmasq serves TCP too: its TCP port accepting means it is up.
        assert!(
            wait_for_port(self.port, Duration::from_secs(5)),
            "dnsmasq did not start on port {}",
            self.port
        );
    }

    fn env(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Pool `p` from the SRV records of `_http._tcp.web.srv.test`, looked up every `interval`.
fn srv_pool(interval: &str) -> Value {
    json!([{
        "name": "p",
        "discovery": { "dns_srv": { "name": "_http._tcp.web.srv.test", "interval": interval } },
        "retries": 0,
    }])
}

fn addr(b: &Backend) -> String {
    b.address()
}

#[test]
fn srv_priorities_make_primaries_and_backups_and_weights_apply() {
    let [a, b, c, d] = Backend::start_each(["a", "b", "c", "d"]);
    let records = [
        ("a", a.addr.port(), 10, 3),
        ("b", b.addr.port(), 10, 1),
        ("c", c.addr.port(), 20, 5),
        ("d", d.addr.port(), 30, 1),
    ];
    let Some(mut dns) = Dnsmasq::start(&records) else {
        return;
    };
    let env = dns.env();
    // A 30 s interval: the records' 1 s TTL brings the next lookup forward.
    let s = Setup::start(srv_pool("30s"), &[("SWITCHYARD_NAMESERVER", env.as_str())]);
    s.wait_members(&[addr(&a), addr(&b), addr(&c)], Duration::from_secs(5));
    for (backend, weight, backup) in [(&a, 3, false), (&b, 1, false), (&c, 5, true)] {
        let v = s.backend(&addr(backend));
        assert_eq!(v["source"], "dns_srv", "{v}");
        assert_eq!(v["weight"], weight, "SRV weight: {v}");
        assert_eq!(v["backup"], backup, "priority tier: {v}");
    }
    let counts = s.spread(40);
    assert_eq!(counts.get("a"), Some(&30), "weights 3:1 {counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(d.count(), 0, "a third priority tier is not used");

    // TTL-aware: the change shows long before the interval.
    dns.restart(&records[..2]);
    s.wait_members(&[addr(&a), addr(&b)], Duration::from_secs(4));
}

#[test]
fn new_records_apply_and_a_dead_nameserver_keeps_the_last_set() {
    let [a, b] = Backend::start_each(["a", "b"]);
    let Some(mut dns) = Dnsmasq::start(&[("a", a.addr.port(), 0, 1)]) else {
        return;
    };
    let env = dns.env();
    let s = Setup::start(srv_pool("1s"), &[("SWITCHYARD_NAMESERVER", env.as_str())]);
    s.wait_members(&[addr(&a)], Duration::from_secs(5));

    // New records: b joins, a leaves (re-resolved within the 1 s interval).
    dns.restart(&[("b", b.addr.port(), 0, 1)]);
    s.wait_members(&[addr(&b)], Duration::from_secs(3));
    let counts = s.spread(10);
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");

    // The nameserver goes away: failures are counted, b keeps serving, one log line.
    dns.stop();
    let before = s.errors("dns_srv");
    let after = s.wait_errors_above("dns_srv", before);
    s.wait_errors_above("dns_srv", after);
    assert_eq!(s.addresses(), [addr(&b)]);
    let counts = s.spread(10);
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    let outage_lines =
        s.sy.stderr_count("SRV lookup of _http._tcp.web.srv.test failed");
    assert_eq!(outage_lines, 1, "stderr:\n{}", s.sy.stderr());

    // Back with a record for a: recovery is logged once and the set follows.
    dns.restart(&[("a", a.addr.port(), 0, 1)]);
    s.wait_members(&[addr(&a)], Duration::from_secs(5));
    assert_eq!(s.sy.stderr_count("dns_srv: answering again"), 1);
}
