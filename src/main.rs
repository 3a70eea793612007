//! switchyard: parse the command line, then hand over to `server`.

use clap::Parser;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = switchyard::cli::Cli::parse();
    if cli.version {
        println!("{}", switchyard::cli::version_text());
        return;
    }
    std::process::exit(switchyard::server::main(&cli));
}
