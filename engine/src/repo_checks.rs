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
    // Every crate's unit tests and test folders, in one invocation.
    assert!(
        unit.contains("cargo test --release --locked --workspace --lib --bins --examples --tests"),
        "{unit}"
    );
    // The tests that need services are left out of `--tests` and named by the integration step.
    let manifest = include_str!("../Cargo.toml");
    for name in ["integration", "faults"] {
        let target = manifest
            .split("[[test]]")
            .find(|t| t.contains(&format!("name = \"{name}\"")))
            .unwrap_or_else(|| panic!("engine/Cargo.toml has no test `{name}`"));
        assert!(target.contains("test = false"), "{target}");
        assert!(
            TEST_SCRIPT.contains(&format!("--test {name}")),
            "scripts/test runs {name}"
        );
    }
}
