//! State Switchyard keeps on disk itself: the admin overlay store and the atomic file
//! writer it and ACME use.

pub mod durable;
pub mod store;

use std::path::PathBuf;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid state file: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot encode the state: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Write(#[from] durable::WriteError),
}
