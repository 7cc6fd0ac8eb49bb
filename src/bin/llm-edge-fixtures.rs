//! `llm-edge-fixtures`: lists a fixture file's entries (id, endpoint, model, status, reply,
//! recording date and age, key), and checks that files still parse and index as llm-edge will
//! load them, so a stale or broken fixture shows before a test run does.
//!
//! ```text
//! cargo run --release --bin llm-edge-fixtures -- list fixtures/chat.jsonl
//! cargo run --release --bin llm-edge-fixtures -- check --ignore user --ignore /metadata a.jsonl b.jsonl
//! ```

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use llm_edge::surface::ConfigError;
use llm_edge::surface::fixtures::{FixtureSet, Ignored, Reply, parse_file, parse_utc, read_file};

const USAGE: &str = "usage: llm-edge-fixtures (list | check) [--json] [--ignore FIELD]... FILE...

  list    one line per fixture: id, endpoint, model, status, reply, recorded, age, source, key
  --json  list as one JSON object per fixture instead, for scripts
  check   loads and indexes the files as mock.fixtures would; exit status 1 if any cannot be
  --ignore FIELD   a field left out of keys, as mock.fixtures.ignore_fields (a top-level name
                   or a JSON pointer); given once or more, it replaces the default list";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (command, rest) = args.split_first().ok_or(USAGE)?;
    let mut ignore = Vec::new();
    let mut files = Vec::new();
    let mut json = false;
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--ignore" => ignore.push(rest.next().ok_or(USAGE)?.clone()),
            "--json" => json = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            _ => files.push(arg.clone()),
        }
    }
    if files.is_empty() || !matches!(command.as_str(), "list" | "check") {
        return Err(USAGE.to_owned());
    }
    let ignored = if ignore.is_empty() {
        Ignored::default()
    } else {
        Ignored::parse("--ignore", &ignore).map_err(|error| described(&error))?
    };
    let mut fixtures = Vec::new();
    for file in &files {
        let bytes = read_file(file).map_err(|error| format!("{file}: {error}"))?;
        let loaded = parse_file(file, &bytes, &ignored).map_err(|error| described(&error))?;
        if command == "check" {
            println!(
                "{file}: {} fixtures, {} torn lines left out",
                loaded.fixtures.len(),
                loaded.torn_lines
            );
        }
        fixtures.extend(loaded.fixtures);
    }
    let set = FixtureSet::new(fixtures, ignored, &[], "rules").map_err(|e| described(&e))?;
    if command == "check" {
        let answering = (0..set.fixtures().len())
            .filter(|&i| set.answers(i))
            .count();
        println!(
            "ok: {} fixtures index to {answering} keys (a later recording of a key replaces an earlier one)",
            set.fixtures().len()
        );
        return Ok(());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    if !json {
        println!("id\tendpoint\tmodel\tstatus\treply\trecorded_at\tage\tsource\tkey");
    }
    for (index, fixture) in set.fixtures().iter().enumerate() {
        if json {
            let row = serde_json::json!({
                "id": fixture.id, "key": fixture.key.to_hex(), "file": fixture.source.0,
                "line": fixture.source.1, "endpoint": fixture.endpoint, "model": fixture.model,
                "status": fixture.status, "recorded_at": fixture.recorded_at,
                "replaced": !set.answers(index),
            });
            println!("{row}");
            continue;
        }
        let reply = match &fixture.reply {
            Reply::Whole(body) => format!("whole {} B", body.len()),
            Reply::Events(events) => format!("stream {} events", events.len()),
        };
        let age = parse_utc(&fixture.recorded_at).map_or_else(String::new, |at| {
            let days = now.saturating_sub(at) / 86_400;
            format!("{days}d")
        });
        let shadowed = if set.answers(index) {
            ""
        } else {
            " (replaced by a later recording)"
        };
        println!(
            "{}\t{}\t{}\t{}\t{reply}\t{}\t{age}\t{}:{}\t{}{shadowed}",
            fixture.id,
            fixture.endpoint,
            fixture.model,
            fixture.status,
            fixture.recorded_at,
            fixture.source.0,
            fixture.source.1,
            fixture.key.to_hex(),
        );
    }
    Ok(())
}

/// An error as `where: what`, such as `a.jsonl:3: not a fixture line (...)`.
fn described(error: &ConfigError) -> String {
    format!("{}: {}", error.field, error.message)
}
