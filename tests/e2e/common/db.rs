//! Private PostgreSQL and MariaDB servers on 127.0.0.1 for the L4 and health-check tests.

use super::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A private PostgreSQL server on 127.0.0.1 (trust authentication, superuser
/// `postgres`, role `switchyard_health` created), in a temporary directory, run as
/// nobody when the tests run as root. Stopped and removed on drop.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Postgres {
    /// The newest `/usr/lib/postgresql/*/bin` (or PATH) with the server binaries.
    fn bin_dir() -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort_by_key(|d| {
            d.parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        });
        let complete = |d: &Path| {
            ["initdb", "postgres", "psql", "pg_isready"]
                .iter()
                .all(|b| d.join(b).is_file())
        };
        if let Some(d) = dirs.into_iter().rev().find(|d| complete(d)) {
            return Some(d);
        }
        find_program(&["initdb"], &[])
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| complete(d))
    }

    /// Starts an instance, or prints a SKIP line and returns `None` when PostgreSQL is
    /// not installed (CI installs the `postgresql` package).
    pub fn start() -> Option<Postgres> {
        let Some(bin) = Self::bin_dir() else {
            eprintln!("SKIP: PostgreSQL server binaries not found (apt-get install postgresql)");
            return None;
        };
        if running_as_root() && find_program(&["setpriv"], &["/usr/bin", "/bin"]).is_none() {
            eprintln!("SKIP: running as root and setpriv (util-linux) is missing");
            return None;
        }
        let dir = shared_tempdir("switchyard-pg-");
        let data = dir.path().join("data");
        run_ok(
            unprivileged(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["--auth=trust", "-U", "postgres", "-N", "-E", "UTF8"])
                .arg("--locale=C"),
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("initdb failed: {e}"));
        let mut pg = Postgres {
            port: listen_port(),
            bin,
            dir,
            child: None,
        };
        pg.launch();
        pg.psql(pg.port, "CREATE ROLE switchyard_health LOGIN")
            .unwrap_or_else(|e| panic!("create role: {e}"));
        Some(pg)
    }

    /// Starts the server process (again) and waits until it accepts queries (60 s at most).
    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("postgres log file");
        let log2 = log.try_clone().expect("log file");
        let child = unprivileged(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=60"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let what = format!("postgres on {}", self.port);
        await_server(
            self,
            &what,
            (Duration::from_secs(60), Duration::from_millis(100)),
            |pg| &mut pg.child,
            |pg| {
                succeeds(
                    Command::new(pg.bin.join("pg_isready"))
                        .args(["-h", "127.0.0.1", "-t", "2", "-p"])
                        .arg(pg.port.to_string()),
                ) && pg.psql(pg.port, "SELECT 1").is_ok()
            },
            Postgres::log,
        );
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Runs `sql` with psql as `postgres` against 127.0.0.1:`port` (this instance or a
    /// proxy in front of it); the unaligned, tuples-only output.
    pub fn psql(&self, port: u16, sql: &str) -> Result<String, String> {
        psql_at(&self.bin, port, sql, &[])
    }

    /// Like `psql`, but started in the background with `PGAPPNAME=app` (stopped on drop).
    pub fn psql_background(&self, port: u16, sql: &str, app: &str) -> ChildGuard {
        let child = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-w",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-p")
            .arg(port.to_string())
            .args(["-Atc", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .env("PGAPPNAME", app)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start psql");
        ChildGuard(child)
    }

    /// Puts `line` first in pg_hba.conf (first match wins) and reloads the server.
    pub fn prepend_hba(&self, line: &str) {
        let path = self.dir.path().join("data").join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).expect("read pg_hba.conf");
        std::fs::write(&path, format!("{line}\n{old}")).expect("write pg_hba.conf");
        self.psql(self.port, "SELECT pg_reload_conf()")
            .unwrap_or_else(|e| panic!("reload: {e}"));
    }

    /// Fast shutdown (SIGINT), waiting for the server to exit (SIGKILL after 20 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), "-CONT");
            send_signal(child.id(), "-INT");
            wait_or_kill(&mut child, Duration::from_secs(20));
        }
    }

    /// Starts the stopped server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Freezes the server (SIGSTOP): the kernel still accepts TCP connections for it,
    /// but nothing answers the protocol.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            assert!(send_signal(pid, "-STOP"), "SIGSTOP postgres");
        }
    }

    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            assert!(send_signal(pid, "-CONT"), "SIGCONT postgres");
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn psql_at(bin: &Path, port: u16, sql: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let mut cmd = Command::new(bin.join("psql"));
    cmd.args([
        "-X",
        "-w",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "postgres",
    ])
    .arg("-p")
    .arg(port.to_string())
    .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
    .env("PGCONNECT_TIMEOUT", "5");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_ok(&mut cmd, Duration::from_secs(20))
}

/// A private MariaDB server on 127.0.0.1 with `--max-connect-errors=5`, root without
/// a password over TCP and a password-less `switchyard_health@'%'`, in a temporary
/// directory. Stopped and removed on drop.
pub struct Mariadb {
    pub port: u16,
    server: PathBuf,
    client: PathBuf,
    admin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mariadb {
    /// Starts an instance, or prints a SKIP line and returns `None` when MariaDB is not
    /// installed (CI installs `mariadb-server` and `mariadb-client`).
    pub fn start() -> Option<Mariadb> {
        let sbin = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];
        let found = (
            find_program(&["mariadbd", "mysqld"], &sbin),
            find_program(&["mariadb-install-db", "mysql_install_db"], &sbin),
            find_program(&["mariadb", "mysql"], &sbin),
            find_program(&["mariadb-admin", "mysqladmin"], &sbin),
        );
        let (Some(server), Some(install), Some(client), Some(admin)) = found else {
            eprintln!(
                "SKIP: MariaDB binaries not found (apt-get install mariadb-server mariadb-client)"
            );
            return None;
        };
        let dir = shared_tempdir("switchyard-mdb-");
        let mut cmd = Command::new(&install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--tmpdir={}", dir.path().display()));
        if running_as_root() {
            cmd.arg("--user=root");
        }
        run_ok(&mut cmd, Duration::from_secs(180))
            .unwrap_or_else(|e| panic!("mariadb-install-db failed: {e}"));
        let mut db = Mariadb {
            port: listen_port(),
            server,
            client,
            admin,
            dir,
            child: None,
        };
        db.launch();
        // Set up over the unix socket: root may log in over TCP from 127.0.0.1, the
        // health-check user from anywhere, both without a password.
        let setup = "CREATE USER IF NOT EXISTS root@'127.0.0.1'; \
             GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION; \
             CREATE USER switchyard_health@'%'; FLUSH PRIVILEGES;";
        run_ok(
            Command::new(&db.client)
                .arg("--no-defaults")
                .arg(format!("--socket={}", db.socket().display()))
                .args(["-uroot", "-e", setup]),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("mariadb setup failed: {e}; log:\n{}", db.log()));
        Some(db)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// Starts mariadbd (again) and waits until it answers a ping (60 s at most).
    fn launch(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new(&self.server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--tmpdir={}", d.display()))
            .args([
                "--skip-log-bin",
                "--max-connect-errors=5",
                "--skip-name-resolve",
            ])
            .args(["--innodb-buffer-pool-size=32M", "--max-connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if running_as_root() {
            cmd.arg("--user=root");
        }
        self.child = Some(cmd.spawn().expect("start mariadbd"));
        let what = format!("mariadbd on {}", self.port);
        await_server(
            self,
            &what,
            (Duration::from_secs(60), Duration::from_millis(100)),
            |db| &mut db.child,
            |db| {
                succeeds(
                    Command::new(&db.admin)
                        .args(["--no-defaults", "--protocol=tcp", "-h127.0.0.1", "-uroot"])
                        .arg(format!("-P{}", db.port))
                        .args(["--connect-timeout=2", "ping"]),
                )
            },
            Mariadb::log,
        );
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Runs `sql` as root over TCP against 127.0.0.1:`port` (this server or a proxy in
    /// front of it); tab-separated rows without column names.
    pub fn query(&self, port: u16, sql: &str) -> Result<String, String> {
        run_ok(
            Command::new(&self.client)
                .args([
                    "--no-defaults",
                    "--protocol=tcp",
                    "-h",
                    "127.0.0.1",
                    "-uroot",
                ])
                .arg(format!("-P{port}"))
                .args(["--connect-timeout=5", "-N", "-B", "-e", sql]),
            Duration::from_secs(20),
        )
    }

    /// A global status counter of this server (e.g. `Connections`, `Aborted_connects`).
    pub fn status(&self, name: &str) -> u64 {
        let out = self
            .query(self.port, &format!("SHOW GLOBAL STATUS LIKE '{name}'"))
            .unwrap_or_else(|e| panic!("status {name}: {e}"));
        out.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no status {name} in {out:?}"))
    }

    /// Graceful shutdown (SIGTERM), waiting for the server to exit (SIGKILL after 30 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), "-TERM");
            wait_or_kill(&mut child, Duration::from_secs(30));
        }
    }

    /// Starts the stopped server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.stop();
    }
}
