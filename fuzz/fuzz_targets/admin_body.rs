//! Admin API request bodies (`POST …/backends`, `PATCH …/backends/ADDRESS`) → the
//! validation the API runs before it changes anything: never a panic, a refusal is a
//! 400 naming the field, and an accepted weight is from 1 to 1000.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::{add_body, patch_body, weight_field, Reply};

fn check_refusal(r: &Reply) {
    assert_eq!(r.status.as_u16(), 400);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON refusal");
    assert!(v["error"].is_string() && v["field"].is_string(), "{v}");
}

fuzz_target!(|data: &[u8]| {
    match add_body(data) {
        Ok((_address, v)) => match weight_field(&v) {
            Ok(w) => assert!(w.is_none_or(|w| (1..=1000).contains(&w))),
            Err(r) => check_refusal(&r),
        },
        Err(r) => check_refusal(&r),
    }
    match patch_body(data) {
        Ok((weight, draining)) => {
            assert!(weight.is_some() || draining.is_some());
            assert!(weight.is_none_or(|w| (1..=1000).contains(&w)));
        }
        Err(r) => check_refusal(&r),
    }
});
