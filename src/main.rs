//! switchyard: parse the command line, then hand over to `server`.

use clap::Parser;
use std::io::Write;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start (docs/PERFORMANCE.md, "Idle connections"):
/// freed memory goes back to the system from a background thread, within about
/// `dirty_decay_ms`, also when no request comes after a burst of connections closes
/// (decay otherwise only advances when the process allocates). `muzzy_decay_ms:0`
/// (jemalloc's default, stated here) returns pages with MADV_DONTNEED, so RSS falls.
/// `tcache_max:131072`: each thread caches freed blocks up to 128 KiB (default 32 KiB),
/// so the 64 KiB body buffers Pingora takes per request come from the thread's cache, not
/// the arena's locked extent search; with 64 requests in flight that search cost about
/// 9 k instructions per request (docs/PERFORMANCE.md, "Issue #16 close-out").
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: Option<&'static libc::c_char> = Some(
    // SAFETY: a pointer to the first byte of a NUL-terminated string with static
    // lifetime, which is what jemalloc's `malloc_conf` is.
    unsafe {
        &*c"background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0,tcache_max:131072".as_ptr()
    },
);

fn main() {
    let cli = switchyard::cli::Cli::parse();
    if cli.version {
        // A closed pipe (`switchyard -V | head -c0`) is not worth a panic.
        let _ = writeln!(std::io::stdout(), "{}", switchyard::cli::version_text());
        return;
    }
    std::process::exit(switchyard::server::main(&cli));
}
