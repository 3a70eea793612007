//! One request's attempts on backends, for the access log and the retry policy: how
//! many were made, the status the current one answered, and where its time went
//! (connecting, then waiting for the response header).

use std::time::Instant;

#[derive(Debug, Default)]
pub struct Attempts {
    /// Backends this request was sent to (connect attempts included).
    pub count: u32,
    /// The current attempt's response status, once its header arrived.
    pub status: Option<u16>,
    started: Option<Instant>,
    connected: Option<Instant>,
    /// The last attempt's connect time (0 on a reused connection).
    pub connect_ms: Option<f64>,
    /// The last attempt's time from connected to its response header.
    pub response_ms: Option<f64>,
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

impl Attempts {
    /// A backend was chosen: a new attempt starts.
    pub fn start(&mut self) {
        self.count += 1;
        self.status = None;
        self.started = Some(Instant::now());
        self.connected = None;
        self.connect_ms = None;
        self.response_ms = None;
    }

    /// The connection to the backend is up (new or reused).
    pub fn connected(&mut self) {
        self.connect_ms = self.started.map(ms);
        self.connected = Some(Instant::now());
    }

    /// The backend's response header arrived.
    pub fn response_header(&mut self, status: u16) {
        self.status = Some(status);
        self.response_ms = self.connected.or(self.started).map(ms);
    }
}
