//! The access log's `termination` code (SPEC §13): who ended an exchange. `-` normal,
//! `CD` the client closed, `CT` the client timed out, `SC` no backend connection (connect
//! failed, or no backend could take the request), `SH` the backend timed out before its
//! response header, `SD` the backend failed after connecting (closed, reset, or timed out
//! mid-response), `PR` refused by this proxy (limits, ACL, rate limit, malformed).

use super::attempt::Attempts;
use pingora::{Error, ErrorSource, ErrorType};

/// Statuses Switchyard answers itself when it refuses a request.
fn is_refusal(status: u16) -> bool {
    matches!(status, 400 | 403 | 408 | 413 | 414 | 429 | 431)
}

/// The code for a finished exchange: `e` is the error that ended it (if any), `status`
/// the status sent to the client (0 when none was).
pub fn code(e: Option<&Error>, attempts: &Attempts, status: u16) -> &'static str {
    let Some(e) = e else {
        // Answered here before any backend: a refusal, or a normal local answer
        // (404 no route, 308 redirect, ACME).
        return if attempts.count == 0 && is_refusal(status) {
            "PR"
        } else {
            "-"
        };
    };
    let etype = e.etype();
    match e.esource() {
        ErrorSource::Downstream => match etype {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => "CT",
            _ => "CD",
        },
        ErrorSource::Upstream => match etype {
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::BindError
            | ErrorType::ConnectProxyFailure
            | ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError => "SC",
            ErrorType::ReadTimedout if attempts.status.is_none() => "SH",
            _ => "SD",
        },
        ErrorSource::Internal | ErrorSource::Unset => match etype {
            ErrorType::HTTPStatus(code) if is_refusal(*code) => "PR",
            // No usable backend (or the queue gave up): no connection to one was made.
            ErrorType::HTTPStatus(502..=504) => "SC",
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeFailure => "SC",
            _ => "-",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Side {
        Up,
        Down,
    }
    use Side::*;

    fn attempted(status: Option<u16>) -> Attempts {
        let mut a = Attempts::default();
        a.start();
        if let Some(s) = status {
            a.response_header(s);
        }
        a
    }

    #[test]
    fn each_side_gets_its_code() {
        let none = Attempts::default();
        assert_eq!(code(None, &attempted(Some(200)), 200), "-");
        assert_eq!(
            code(None, &none, 404),
            "-",
            "no route is an answer, not a refusal"
        );
        assert_eq!(code(None, &none, 403), "PR");
        assert_eq!(code(None, &none, 429), "PR");
        // (error, side, response header from the backend, status, code)
        for (error, side, header, status, want) in [
            (ErrorType::ConnectRefused, Up, None, 502, "SC"),
            (ErrorType::ReadTimedout, Up, None, 504, "SH"),
            (ErrorType::ReadTimedout, Up, Some(200), 200, "SD"),
            (ErrorType::ConnectionClosed, Up, Some(200), 200, "SD"),
            (ErrorType::ConnectionClosed, Down, None, 0, "CD"),
        ] {
            let e = match side {
                Up => Error::new_up(error),
                Down => Error::new_down(error),
            };
            let got = code(Some(&e), &attempted(header), status);
            assert_eq!(got, want, "{e} with {header:?}, {status}");
        }
        let down = |t| Error::new_down(t);
        assert_eq!(code(Some(&down(ErrorType::ReadTimedout)), &none, 408), "CT");
        let status = |s| Error::new(ErrorType::HTTPStatus(s));
        assert_eq!(code(Some(&status(413)), &none, 413), "PR");
        assert_eq!(code(Some(&status(503)), &none, 503), "SC");
    }
}
