//! switchyard: parse the command line, then hand over to `server`.

use clap::Parser;
use std::io::Write;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = switchyard::cli::Cli::parse();
    if cli.version {
        // A closed pipe (`switchyard -V | head -c0`) is not worth a panic.
        let _ = writeln!(std::io::stdout(), "{}", switchyard::cli::version_text());
        return;
    }
    std::process::exit(switchyard::server::main(&cli));
}
