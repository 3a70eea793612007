//! HTTP/2 abuse accounting on a connection's bytes (SPEC §10 `h2_abuse`). The h2 crate
//! already answers rapid reset, CONTINUATION floods and oversized header blocks with a
//! GOAWAY; [`H2Watch`] reads the frame headers going each way so that such a GOAWAY is
//! counted, and closes connections that flood PING or SETTINGS frames, which h2 answers
//! one by one for ever. Only the 9-byte frame headers (and a GOAWAY's error code) are
//! looked at; payloads are skipped by length.

use std::time::{Duration, Instant};

/// The client connection preface (RFC 9113 §3.4), before the client's first frame.
const PREFACE_LEN: usize = 24;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const NO_ERROR: u32 = 0;

/// PING or SETTINGS frames a client may send per window (browsers send a handful).
pub const CONTROL_FRAMES_PER_WINDOW: u32 = 1000;
pub const WINDOW: Duration = Duration::from_secs(10);

/// One direction's frame boundaries.
#[derive(Debug, Default)]
struct Frames {
    /// Bytes still to skip before the first frame (the client preface).
    skip: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
    /// For a GOAWAY: its error code bytes as they arrive (payload offset 4..8).
    goaway: Option<([u8; 4], usize, usize)>,
}

/// A frame header as parsed, with a GOAWAY's error code once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Frame { kind: u8, flags: u8 },
    GoawayCode(u32),
}

impl Frames {
    fn feed(&mut self, mut bytes: &[u8], seen: &mut impl FnMut(Seen)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                if let Some((code, offset, got)) = self.goaway.as_mut() {
                    // The error code is payload bytes 4..8.
                    for (i, b) in bytes[..n].iter().enumerate() {
                        let at = *offset + i;
                        if (4..8).contains(&at) {
                            code[at - 4] = *b;
                            *got += 1;
                        }
                    }
                    *offset += n;
                    if *got == 4 {
                        seen(Seen::GoawayCode(u32::from_be_bytes(*code)));
                        self.goaway = None;
                    }
                }
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                let h = self.header;
                let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.payload_left = len;
                self.goaway = (h[3] == GOAWAY && len >= 8).then_some(([0; 4], 0, 0));
                seen(Seen::Frame {
                    kind: h[3],
                    flags: h[4],
                });
            }
        }
    }
}

/// What the watch concluded about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// The server sent a GOAWAY with an error: h2 refused the client's behaviour.
    RefusedByH2,
    /// The client flooded PING or SETTINGS frames: close it.
    ControlFlood,
}

#[derive(Debug)]
pub struct H2Watch {
    from_client: Frames,
    to_client: Frames,
    window_start: Instant,
    control_frames: u32,
    verdict: Verdict,
}

impl H2Watch {
    /// A watch that sees the connection from the client preface on.
    pub fn new(now: Instant) -> Self {
        H2Watch {
            from_client: Frames {
                skip: PREFACE_LEN,
                ..Frames::default()
            },
            to_client: Frames::default(),
            window_start: now,
            control_frames: 0,
            verdict: Verdict::Fine,
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Bytes read from the client.
    pub fn read(&mut self, bytes: &[u8], now: Instant) -> Verdict {
        let mut control = 0;
        self.from_client.feed(bytes, &mut |s| {
            if let Seen::Frame { kind, flags } = s {
                if (kind == PING || kind == SETTINGS) && flags & ACK == 0 {
                    control += 1;
                }
            }
        });
        if now.duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.control_frames = 0;
        }
        self.control_frames = self.control_frames.saturating_add(control);
        if self.verdict == Verdict::Fine && self.control_frames > CONTROL_FRAMES_PER_WINDOW {
            self.verdict = Verdict::ControlFlood;
        }
        self.verdict
    }

    /// Bytes written to the client.
    pub fn wrote(&mut self, bytes: &[u8]) -> Verdict {
        let mut refused = false;
        self.to_client.feed(bytes, &mut |s| {
            if let Seen::GoawayCode(code) = s {
                refused |= code != NO_ERROR;
            }
        });
        if refused && self.verdict == Verdict::Fine {
            self.verdict = Verdict::RefusedByH2;
        }
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn goaway(code: u32) -> Vec<u8> {
        let mut p = 7u32.to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        frame(GOAWAY, 0, 0, &p)
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    #[test]
    fn a_goaway_with_an_error_is_a_refusal_even_split_across_writes() {
        let now = Instant::now();
        let mut w = H2Watch::new(now);
        let mut bytes = frame(SETTINGS, 0, 0, &[0; 6]);
        bytes.extend(goaway(0xb));
        for b in &bytes {
            w.wrote(std::slice::from_ref(b));
        }
        assert_eq!(w.verdict(), Verdict::RefusedByH2);
    }

    #[test]
    fn a_graceful_goaway_is_not() {
        let mut w = H2Watch::new(Instant::now());
        assert_eq!(w.wrote(&goaway(NO_ERROR)), Verdict::Fine);
    }

    #[test]
    fn a_ping_flood_is_caught_and_acks_and_other_frames_do_not_count() {
        let now = Instant::now();
        let mut w = H2Watch::new(now);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        for _ in 0..CONTROL_FRAMES_PER_WINDOW - 1 {
            bytes.extend(frame(PING, 0, 0, &[0; 8]));
            bytes.extend(frame(PING, ACK, 0, &[0; 8]));
            bytes.extend(frame(0x0, 0, 1, &[0; 100]));
        }
        assert_eq!(w.read(&bytes, now), Verdict::Fine);
        assert_eq!(
            w.read(&frame(PING, 0, 0, &[0; 8]), now),
            Verdict::ControlFlood
        );
    }

    #[test]
    fn the_control_frame_count_restarts_each_window() {
        let now = Instant::now();
        let mut w = H2Watch::new(now);
        w.read(PREFACE, now);
        let pings: Vec<u8> = (0..CONTROL_FRAMES_PER_WINDOW)
            .flat_map(|_| frame(PING, 0, 0, &[0; 8]))
            .collect();
        assert_eq!(w.read(&pings, now), Verdict::Fine);
        assert_eq!(w.read(&pings, now + WINDOW), Verdict::Fine);
    }

    #[test]
    fn payload_lengths_are_followed_across_reads() {
        let now = Instant::now();
        let mut w = H2Watch::new(now);
        // A DATA frame whose payload looks like PING headers must not count.
        let fake: Vec<u8> = (0..2000).flat_map(|_| frame(PING, 0, 0, &[])).collect();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x0, 0, 1, &fake));
        for chunk in bytes.chunks(7) {
            w.read(chunk, now);
        }
        assert_eq!(w.verdict(), Verdict::Fine);
    }
}
