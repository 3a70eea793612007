//! Unit tests of `admin::backends_api`.

use super::*;

fn field(r: Reply) -> (StatusCode, String) {
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    (r.status, v["field"].as_str().unwrap().to_string())
}

#[test]
fn add_bodies() {
    let (address, v) = add_body(br#"{"address":"10.0.0.5:80","weight":0}"#)
        .ok()
        .unwrap();
    assert_eq!(address, "10.0.0.5:80");
    // The weight is checked later (after the lookup), here it is still in the value.
    assert!(weight_field(&v).is_err());
    let bad = |b: &[u8]| field(add_body(b).err().unwrap());
    assert_eq!(bad(b"[1]"), (StatusCode::BAD_REQUEST, "body".into()));
    assert_eq!(
        bad(br#"{"weight":1}"#),
        (StatusCode::BAD_REQUEST, "address".into())
    );
    assert_eq!(
        bad(br#"{"address":1}"#),
        (StatusCode::BAD_REQUEST, "address".into())
    );
    assert_eq!(bad(br#"{"x":1}"#), (StatusCode::BAD_REQUEST, "x".into()));
}

#[test]
fn patch_bodies() {
    assert_eq!(patch_body(br#"{"weight":5}"#).ok(), Some((Some(5), None)));
    assert_eq!(
        patch_body(br#"{"draining":true,"weight":1000}"#).ok(),
        Some((Some(1000), Some(true)))
    );
    let bad = |b: &[u8]| field(patch_body(b).err().unwrap());
    assert_eq!(bad(b"{}"), (StatusCode::BAD_REQUEST, "body".into()));
    assert_eq!(
        bad(br#"{"weight":1001}"#),
        (StatusCode::BAD_REQUEST, "weight".into())
    );
    assert_eq!(
        bad(br#"{"weight":2.5}"#),
        (StatusCode::BAD_REQUEST, "weight".into())
    );
    assert_eq!(
        bad(br#"{"draining":1}"#),
        (StatusCode::BAD_REQUEST, "draining".into())
    );
    assert_eq!(bad(b"\xff"), (StatusCode::BAD_REQUEST, "body".into()));
}
