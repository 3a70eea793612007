//! The fuzz corpus (fuzz/corpus/<target>/) as a regression suite: every committed input,
//! including any crash a fuzz run found and a fix closed, runs through its target's
//! property on every test run (the fuzzer itself runs with scripts/fuzz).
use std::path::Path;

#[test]
fn every_committed_fuzz_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut ran = 0;
    for dir in std::fs::read_dir(&root).expect("fuzz/corpus") {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let target = switchyard::fuzzing::target(&name)
            .unwrap_or_else(|| panic!("fuzz/corpus/{name} has no target"));
        for input in std::fs::read_dir(&dir).unwrap() {
            let path = input.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{} fails its target", path.display());
            ran += 1;
        }
    }
    assert!(ran >= 20, "only {ran} corpus inputs");
}
