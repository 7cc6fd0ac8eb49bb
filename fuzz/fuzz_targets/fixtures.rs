//! Any bytes as a fixture file: refused with a reason naming a line, or loaded; never a panic.
//! What loads keeps its promises: every fixture that answers its key is found by its own request
//! (so indexing and matching agree), no two fixtures share a key unless one replaces the other,
//! torn lines are counted rather than loaded, and loading holds no more than a few times the
//! file's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_edge::surface::fixtures::{FixtureSet, Found, Ignored, Reply, parse_file};

fuzz_target!(|data: &[u8]| {
    let ignored = Ignored::default();
    let Ok(loaded) = parse_file("fuzz.jsonl", data, &ignored) else {
        return;
    };
    let lines = data.split(|&b| b == b'\n').count();
    assert!(loaded.fixtures.len() + loaded.torn_lines <= lines);
    let mut held = 0usize;
    for fixture in &loaded.fixtures {
        held += match &fixture.reply {
            Reply::Whole(body) => body.len(),
            Reply::Events(events) => events.iter().map(|(_, raw)| raw.len()).sum(),
        };
        let (file, line) = &fixture.source;
        assert!(file == "fuzz.jsonl" && (1..=lines).contains(line));
        if let Reply::Events(events) = &fixture.reply {
            assert!(events.windows(2).all(|pair| pair[0].0 <= pair[1].0));
        }
    }
    assert!(held <= data.len());
    let Ok(set) = FixtureSet::new(loaded.fixtures, ignored, &[], "rules") else {
        panic!("a set without rules always indexes");
    };
    for (index, fixture) in set.fixtures().iter().enumerate() {
        match set.find(&fixture.endpoint, &fixture.request) {
            Found::Exact(found) => {
                assert_eq!(found.key, fixture.key);
                assert_eq!(set.answers(index), std::ptr::eq(found, fixture));
            }
            other => panic!("a loaded fixture does not find itself: {other:?}"),
        }
    }
});
