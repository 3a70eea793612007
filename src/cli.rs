//! The command line (SPEC §1).

use clap::Parser;
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "/etc/switchyard/switchyard.yaml";

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    about = "L4/L7 load balancer and reverse proxy",
    disable_version_flag = true
)]
pub struct Cli {
    /// Configuration file [env: SWITCHYARD_CONFIG; default /etc/switchyard/switchyard.yaml]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration and exit: 0 valid, 1 invalid
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Take the listening sockets over from the running instance (graceful upgrade)
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// Run in the background, writing server.pid_file
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Print the version and build details
    #[arg(short = 'V', long = "version")]
    pub version: bool,
}

impl Cli {
    /// `-c`, else `$SWITCHYARD_CONFIG`, else the /etc default.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os("SWITCHYARD_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }
}

pub fn version_text() -> String {
    format!(
        "switchyard {}\nbuilt with pingora 0.9 (openssl), {} {}, {} profile",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}
