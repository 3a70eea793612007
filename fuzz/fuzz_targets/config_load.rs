//! YAML text → the loader `switchyard -t` runs (`config::parse_str`, without opening
//! the certificate files it names): never a panic, and a configuration it accepts
//! serialises as `GET /api/v1/config` shows it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `${NAME}` resolves for some names, not others: both paths run.
    let env = |name: &str| (name.len() % 2 == 0).then(|| format!("v-{name}"));
    match switchyard::config::parse_str("fuzz.yaml", text, &env, false) {
        Ok(loaded) => {
            let json = serde_json::to_value(&loaded.config);
            assert!(
                json.is_ok(),
                "an accepted config does not serialise: {json:?}"
            );
            for w in &loaded.warnings {
                let _ = w.to_string();
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "rejected without a diagnostic");
            for e in &errors {
                let _ = e.to_string();
            }
        }
    }
});
