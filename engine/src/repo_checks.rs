//! Checks of the project's own files that a user runs: the Makefile and the test script.

const MAKEFILE: &str = include_str!("../../Makefile");
const TEST_SCRIPT: &str = include_str!("../../scripts/test");

#[test]
fn every_phony_target_of_the_makefile_exists() {
    let phony = MAKEFILE
        .lines()
        .find_map(|l| l.strip_prefix(".PHONY:"))
        .expect("a .PHONY line");
    for name in phony.split_whitespace() {
        let rule = format!("{name}:");
        assert!(
            MAKEFILE.lines().any(|l| l.starts_with(&rule)),
            "`.PHONY` names `{name}`, which has no rule"
        );
    }
}

#[test]
fn make_test_unit_runs_every_test_that_needs_no_services() {
    assert!(
        MAKEFILE.contains("test-unit:") && MAKEFILE.contains("scripts/test unit"),
        "make test-unit runs scripts/test unit"
    );
    let unit = TEST_SCRIPT
        .split("unit_tests() {")
        .nth(1)
        .and_then(|s| s.split("\n}").next())
        .expect("scripts/test defines unit_tests");
    // The operator and connector test folders, and the engine's own unit tests.
    assert!(
        unit.contains("--workspace --exclude engine --lib --bins --examples --tests"),
        "{unit}"
    );
    assert!(unit.contains("-p engine --lib --bins --examples"), "{unit}");
}
