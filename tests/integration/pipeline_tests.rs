//! `engine test` as users run it: the shipped pipelines' tests pass, a broken expectation fails
//! with a readable diff and exit code 1, and `--format json` says the same. No service is used.

use crate::ENGINE;
use test_support::*;

fn shipped() -> Vec<String> {
    let dir = repo_root().join("pipelines");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn engine_test_passes_on_the_shipped_pipelines_and_fails_on_a_broken_expectation() {
    // `pipelines/*.toml`, test files included: each stands for its pipeline.
    let files = shipped();
    let args: Vec<&str> = ["test"]
        .into_iter()
        .chain(files.iter().map(String::as_str))
        .collect();
    let out = ENGINE.run(&args, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_success(&out);
    let total = stdout.lines().filter(|l| l.starts_with("  ok ")).count();
    assert!(total >= 10, "{stdout}");
    assert!(
        stdout.contains(&format!("{total} test(s): {total} passed, 0 failed")),
        "{stdout}"
    );
    assert!(stdout.contains("orders_console.toml: no tests"), "{stdout}");
    // validate takes the test files too.
    let args: Vec<&str> = ["validate"]
        .into_iter()
        .chain(files.iter().map(String::as_str))
        .collect();
    let out = ENGINE.run(&args, &[]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("orders.test.toml: ok (4 tests)"));

    // A copy of the orders tests with one window's count and total off.
    let dir = std::env::temp_dir().join(unique("engine-test-broken"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = repo_root().join("pipelines");
    std::fs::copy(src.join("orders.toml"), dir.join("orders.toml")).unwrap();
    let tests = std::fs::read_to_string(src.join("orders.test.toml")).unwrap();
    let right = r#"customer_id = "c1", nb_commandes = 2, total_commandes = 15.0 },"#;
    assert!(tests.contains(right));
    let broken = tests.replacen(
        right,
        r#"customer_id = "c1", nb_commandes = 3, total_commandes = 115.0 },"#,
        1,
    );
    std::fs::write(dir.join("orders.test.toml"), broken).unwrap();
    let file = dir.join("orders.toml").display().to_string();
    let out = ENGINE.run(&["test", &file], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  FAILED  1-minute windows close when the watermark passes them"),
        "{stdout}"
    );
    assert!(stdout.contains("`customer_orders_1min`: expected 2 row(s) after barrier 2, got 2: 1 expected row(s) not found, 1 row(s) not expected"), "{stdout}");
    assert!(
        stdout.contains(
            r#"- expected  {"customer_id":"c1","nb_commandes":3,"total_commandes":115.0"#
        ),
        "{stdout}"
    );
    assert!(
        stdout
            .contains(r#"+ actual    {"customer_id":"c1","nb_commandes":2,"total_commandes":15.0"#),
        "{stdout}"
    );
    assert!(stdout.contains("4 test(s): 3 passed, 1 failed"), "{stdout}");
    let out = ENGINE.run(&["test", &file, "--format", "json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(
        (doc["passed"].as_u64(), doc["failed"].as_u64()),
        (Some(3), Some(1))
    );
    let failed: Vec<&serde_json::Value> = doc["pipelines"][0]["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["failures"][0]["node"], "customer_orders_1min");
    assert_eq!(failed[0]["failures"][0]["missing"][0]["nb_commandes"], 3);
    // --filter runs only the tests whose name contains the text.
    let out = ENGINE.run(&["test", &file, "--filter", "quarantine"], &[]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 test(s): 1 passed, 0 failed"));
}
