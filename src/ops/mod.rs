//! Process operations: configuration reload, signals and shutdown, and the background
//! tasks that keep pools up to date (health checks, discovery).

pub mod reload;
pub mod shutdown;
pub mod tasks;
