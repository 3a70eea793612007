//! Unit tests of `admin::api`.

use super::*;

#[test]
fn decodes_percent_escapes() {
    assert_eq!(
        percent_decode("127.0.0.1%3A8080").as_deref(),
        Some("127.0.0.1:8080")
    );
    assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
}
