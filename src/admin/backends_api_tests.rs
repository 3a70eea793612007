//! Unit tests of `admin::backends_api`.

use super::*;

/// The field a 400 reply names.
fn rejected_field(r: Reply) -> String {
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["field"].as_str().unwrap().to_string()
}

#[test]
fn add_bodies() {
    let (address, v) = add_body(br#"{"address":"10.0.0.5:80","weight":0}"#)
        .ok()
        .unwrap();
    assert_eq!(address, "10.0.0.5:80");
    // The weight is checked later (after the lookup), here it is still in the value.
    assert!(weight_field(&v).is_err());
    for (body, field) in [
        (&b"[1]"[..], "body"),
        (br#"{"weight":1}"#, "address"),
        (br#"{"address":1}"#, "address"),
        (br#"{"x":1}"#, "x"),
    ] {
        assert_eq!(rejected_field(add_body(body).err().unwrap()), field);
    }
}

#[test]
fn patch_bodies() {
    assert_eq!(patch_body(br#"{"weight":5}"#).ok(), Some((Some(5), None)));
    assert_eq!(
        patch_body(br#"{"draining":true,"weight":1000}"#).ok(),
        Some((Some(1000), Some(true)))
    );
    for (body, field) in [
        (&b"{}"[..], "body"),
        (br#"{"weight":1001}"#, "weight"),
        (br#"{"weight":2.5}"#, "weight"),
        (br#"{"draining":1}"#, "draining"),
        (b"\xff", "body"),
    ] {
        assert_eq!(rejected_field(patch_body(body).err().unwrap()), field);
    }
}
