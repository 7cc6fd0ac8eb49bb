//! The fixture lister, run as a user runs it: it lists what a file holds, and its `check` fails
//! on a file llm-edge would refuse, naming the line.

use std::process::Command;

const WHOLE: &str = r#"{"llm_edge_fixture":1,"id":"x","key":"x","recorded_at":"2026-11-01T00:00:00Z","endpoint":"chat_completions","model":"gpt-4o","request":{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]},"status":200,"content_type":"application/json","reply":{"id":"chatcmpl-1"},"headers_ms":1,"duration_ms":2,"usage":{}}"#;

fn lister(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_llm-edge-fixtures"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("llm-edge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn list_shows_each_fixture_with_its_age_and_key_and_a_replaced_one() {
    let path = file("list.jsonl", &format!("{WHOLE}\n{WHOLE}\n"));
    let (ok, out, _) = lister(&["list", &path]);
    assert!(ok);
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for row in &rows {
        let columns: Vec<&str> = row.split('\t').collect();
        assert_eq!(
            &columns[1..5],
            ["chat_completions", "gpt-4o", "200", "whole 19 B"]
        );
        assert_eq!(columns[5], "2026-11-01T00:00:00Z");
        assert!(columns[6].ends_with('d') && columns[6] != "0d", "{row}");
        assert!(columns[8].starts_with("sha256:"), "{row}");
    }
    assert!(rows[0].ends_with("(replaced by a later recording)"));
    assert!(!rows[1].contains("replaced"));
}

#[test]
fn check_passes_a_good_file_and_fails_a_bad_one_naming_its_line() {
    let good = file("good.jsonl", &format!("{WHOLE}\n{}", &WHOLE[..40]));
    let (ok, out, _) = lister(&["check", &good]);
    assert!(ok, "{out}");
    assert!(out.contains("1 fixtures, 1 torn lines"), "{out}");
    let bad = file("bad.jsonl", &format!("{WHOLE}\nnot json\n"));
    let (ok, _, err) = lister(&["check", &bad]);
    assert!(!ok);
    assert!(err.contains("bad.jsonl:2: not a fixture line"), "{err}");
    let (ok, _, err) = lister(&["inspect", &good]);
    assert!(!ok && err.starts_with("usage:"), "{err}");
}
