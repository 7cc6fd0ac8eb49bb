//! Streamed tool arguments are JSON text, which the client decodes: `bob\u0040example.com` in
//! them reads `bob@example.com`. The guard reads them as written, so before it does, every
//! escape JSON does not require (`\uXXXX` of a character that may stand as itself, and `\/`)
//! is written as the character it stands for: the same JSON to the client, and the text the
//! detectors read is the text the client gets. Escapes JSON requires stay (a quote, a
//! backslash, a control character); no value a detector knows is made of those but a phone
//! number whose separator is a line break or a tab, which the stream guard then does not find
//! (README, "Attacks tried").

use std::borrow::Cow;

/// `text` with every escape JSON does not require written as its character; escapes it
/// requires, lone surrogates and an unfinished escape at the end stay as they are.
pub(super) fn canonical_escapes(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let Some(first) = memchr::memchr(b'\\', bytes) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..first]);
    let mut at = first;
    while at < bytes.len() {
        let Some(next) = memchr::memchr(b'\\', &bytes[at..]) else {
            out.push_str(&text[at..]);
            break;
        };
        out.push_str(&text[at..at + next]);
        at += next;
        let (length, decoded) = escape(&text[at..]);
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&text[at..at + length]),
        }
        at += length;
    }
    Cow::Owned(out)
}

/// The start of the escape that `cut` would split (or of an unfinished one it would end in),
/// else `cut`: text sent on must end between escapes, or the next piece's escape is read
/// without its start.
pub(super) fn escape_boundary(text: &str, cut: usize) -> usize {
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(next) = memchr::memchr(b'\\', &bytes[at..cut]) {
        let start = at + next;
        let (length, _) = escape(&text[start..]);
        if start + length > cut || is_unfinished(&text[start..]) {
            return start;
        }
        at = start + length;
        if at >= cut {
            break;
        }
    }
    cut
}

/// The length of the escape `text` starts with (a backslash), and the character it is written
/// as, when JSON does not require the escape.
fn escape(text: &str) -> (usize, Option<char>) {
    let bytes = text.as_bytes();
    match bytes.get(1) {
        None => (1, None),
        Some(b'/') => (2, Some('/')),
        Some(b'u') => {
            let Some(unit) = hex4(bytes, 2) else {
                // An unfinished or malformed `\u`: the backslash and what follows stay.
                return (bytes.len().min(6), None);
            };
            if (0xD800..0xDC00).contains(&unit) {
                let low = (bytes.get(6..8) == Some(b"\\u"))
                    .then(|| hex4(bytes, 8))
                    .flatten()
                    .filter(|low| (0xDC00..0xE000).contains(low));
                return match low {
                    Some(low) => {
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        (12, char::from_u32(code))
                    }
                    None => (6, None),
                };
            }
            let decoded = char::from_u32(unit).filter(|c| !must_escape(*c));
            (6, decoded)
        }
        // `\"`, `\\`, `\n` and the rest: required, or not an escape at all.
        Some(_) => (1 + text[1..].chars().next().map_or(0, char::len_utf8), None),
    }
}

/// Whether `text`, the rest of a text from an escape on, could still become a longer escape
/// as more text comes: `\`, `\u` with fewer than four digits, or a high surrogate whose low
/// half may follow.
fn is_unfinished(text: &str) -> bool {
    let bytes = text.as_bytes();
    match bytes.get(1) {
        None => true,
        Some(b'u') if bytes.len() < 6 => bytes[2..].iter().all(u8::is_ascii_hexdigit),
        Some(b'u') => {
            let high = hex4(bytes, 2).is_some_and(|unit| (0xD800..0xDC00).contains(&unit));
            let tail = &bytes[6..];
            high && tail.len() < 6
                && tail.iter().enumerate().all(|(i, b)| match i {
                    0 => *b == b'\\',
                    1 => *b == b'u',
                    _ => b.is_ascii_hexdigit(),
                })
        }
        Some(_) => false,
    }
}

/// The four hex digits at `at`, as a number.
fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    let digits = std::str::from_utf8(digits).ok()?;
    u32::from_str_radix(digits, 16)
        .ok()
        .filter(|_| digits.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The characters JSON requires escaped in a string.
fn must_escape(c: char) -> bool {
    c == '"' || c == '\\' || c < ' '
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use serde_json::Value;

    use super::*;

    /// `text` with each character written as JSON may write it: as itself, or as `\uXXXX`
    /// (a surrogate pair past the BMP), chosen at random, and `/` sometimes as `\/`.
    fn escaped_at_random(text: &str, rng: &mut StdRng) -> String {
        let mut out = String::new();
        for c in text.chars() {
            let required = must_escape(c);
            if !required && !rng.random_bool(0.5) {
                out.push(c);
            } else if c == '/' && rng.random_bool(0.5) {
                out.push_str("\\/");
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        out
    }

    /// The decoded JSON of arguments, and their canonical form: the same value, and no escape
    /// left but those JSON requires.
    #[test]
    fn canonical_arguments_are_the_same_json_with_only_required_escapes() {
        let mut rng = StdRng::seed_from_u64(40);
        let texts = [
            "bob@example.com",
            "a/b \"q\" \\ é 🦀 \n\t end",
            "+1 415-555-2671",
        ];
        for _ in 0..200 {
            for text in texts {
                let arguments = format!(
                    r#"{{"to": "{}", "n": 1}}"#,
                    escaped_at_random(text, &mut rng)
                );
                let canonical = canonical_escapes(&arguments);
                let decoded: Value = serde_json::from_str(&arguments).unwrap();
                assert_eq!(serde_json::from_str::<Value>(&canonical).unwrap(), decoded);
                assert_eq!(decoded["to"], text);
                if !text.chars().any(must_escape) {
                    assert!(canonical.contains(text), "{arguments} -> {canonical}");
                }
            }
        }
    }

    #[test]
    fn lone_surrogates_malformed_and_unfinished_escapes_stay_as_they_are() {
        for text in [
            r"\ud83d x",
            r"\ude00",
            r"\u12",
            r"\u12zz",
            r"\",
            r"\ud83d\u0041",
            r#"\"\\\n"#,
        ] {
            let canonical = canonical_escapes(text);
            let expected = text.replace(r"\u0041", "A");
            assert_eq!(canonical, expected, "{text}");
        }
        assert_eq!(canonical_escapes(r"\ud83d\ude00\u0040\/"), "😀@/");
    }

    /// A cut is moved to the start of the escape it would split, or of an unfinished one it
    /// ends in, and left where it is between escapes.
    #[test]
    fn a_cut_never_splits_an_escape() {
        let text = r#"ab\u0040c\ud83d\ude00d\n"#;
        let starts = [2, 9, 22];
        for cut in 0..=text.len() {
            let moved = escape_boundary(text, cut);
            let inside = [(2, 8), (9, 21), (22, 24)]
                .iter()
                .find(|(start, end)| *start < cut && cut < *end);
            match inside {
                Some((start, _)) => assert_eq!(moved, *start, "{cut}"),
                None => assert_eq!(moved, cut, "{cut}"),
            }
            assert!(moved == cut || starts.contains(&moved));
        }
        for unfinished in [
            r"x\",
            r"x\u",
            r"x\u00",
            r"x\u004",
            r"x\ud83d",
            r"x\ud83d\u",
            r"x\ud83d\ude0",
        ] {
            assert_eq!(
                escape_boundary(unfinished, unfinished.len()),
                1,
                "{unfinished}"
            );
        }
        assert_eq!(escape_boundary(r"x\ud83dy", 8), 8);
    }
}
