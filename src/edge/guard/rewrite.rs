//! Putting one request's values in or out of a reply's bytes, for record and replay: every
//! string is rewritten decoded, so no JSON escape (`\u0040`, `\/`, an escaped newline) hides a
//! value, and JSON held inside a string (tool-call arguments) is rewritten inside it. Bodies
//! that are not JSON, and event lines that are not JSON data, are rewritten as text.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

use super::masker::Masker;

/// Replaces one set of texts by another in a reply's strings.
#[derive(Debug)]
pub struct Rewriter {
    automaton: AhoCorasick,
    to: Vec<String>,
}

impl Masker {
    /// The rewriter that puts this request's values back in place of its placeholders (a
    /// replayed reply); `None` when there is nothing to restore.
    pub fn restorer(&self) -> Option<Rewriter> {
        let (from, to) = self
            .originals()
            .map(|(p, o)| (p.to_owned(), o.to_owned()))
            .unzip();
        Rewriter::new(from, to)
    }

    /// The rewriter that masks this request's values again (a reply about to be recorded, which
    /// a reversible guard restored); `None` when the request had none.
    pub fn remasker(&self) -> Option<Rewriter> {
        let (to, from) = self
            .originals()
            .map(|(p, o)| (p.to_owned(), o.to_owned()))
            .unzip();
        Rewriter::new(from, to)
    }
}

impl Rewriter {
    fn new(from: Vec<String>, to: Vec<String>) -> Option<Self> {
        if from.is_empty() {
            return None;
        }
        // Leftmost-longest: of two values that start at one place, the longer goes whole. A
        // matcher that cannot be built leaves nothing rewritten, which the caller's check sees.
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&from)
            .ok()?;
        Some(Self { automaton, to })
    }

    /// A whole body: JSON rewritten string by string, anything else as text.
    pub fn body<'b>(&self, body: &'b [u8]) -> Cow<'b, [u8]> {
        if let Ok(mut value) = serde_json::from_slice::<Value>(body) {
            return match self.value(&mut value) {
                true => Cow::Owned(serde_json::to_vec(&value).expect("a JSON value serializes")),
                false => Cow::Borrowed(body),
            };
        }
        self.text_bytes(body)
    }

    /// One server-sent event: each `data:` line holding JSON rewritten string by string, every
    /// other line as text.
    pub fn event<'b>(&self, event: &'b [u8]) -> Cow<'b, [u8]> {
        let Ok(text) = std::str::from_utf8(event) else {
            return Cow::Borrowed(event);
        };
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        for line in text.split_inclusive('\n') {
            let (content, ending) = split_line_ending(line);
            let json = content
                .strip_prefix("data:")
                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                .and_then(|data| serde_json::from_str::<Value>(data).ok());
            match json {
                Some(mut value) => {
                    if self.value(&mut value) {
                        out.push_str("data: ");
                        out.push_str(&serde_json::to_string(&value).expect("JSON serializes"));
                        out.push_str(ending);
                        changed = true;
                    } else {
                        out.push_str(line);
                    }
                }
                None => match self.text(content) {
                    Some(rewritten) => {
                        out.push_str(&rewritten);
                        out.push_str(ending);
                        changed = true;
                    }
                    None => out.push_str(line),
                },
            }
        }
        // A value can span lines outside JSON data (a comment holding a restored PEM block).
        if let Some(rewritten) = self.text(&out) {
            return Cow::Owned(rewritten.into_bytes());
        }
        if changed {
            Cow::Owned(out.into_bytes())
        } else {
            Cow::Borrowed(event)
        }
    }

    /// Whether any of the texts being replaced is still in `bytes` (a body or an event), read
    /// decoded: the check that keeps a value from being recorded whatever form it took.
    pub fn leaves_any(&self, bytes: &[u8]) -> bool {
        if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
            return self.value_holds(&value);
        }
        let text = String::from_utf8_lossy(bytes);
        self.automaton.is_match(text.as_ref())
            || text.lines().any(|line| {
                let data = line
                    .strip_prefix("data:")
                    .map(|data| data.strip_prefix(' ').unwrap_or(data));
                match data.and_then(|data| serde_json::from_str::<Value>(data).ok()) {
                    Some(value) => self.value_holds(&value),
                    None => self.automaton.is_match(line),
                }
            })
    }

    /// Rewrites every string of a JSON value; whether anything changed.
    fn value(&self, value: &mut Value) -> bool {
        match value {
            Value::String(text) => {
                if let Some(mut inner) = nested_json(text) {
                    if self.value(&mut inner) {
                        *text = serde_json::to_string(&inner).expect("JSON serializes");
                        return true;
                    }
                }
                match self.text(text) {
                    Some(rewritten) => {
                        *text = rewritten;
                        true
                    }
                    None => false,
                }
            }
            Value::Array(items) => items.iter_mut().fold(false, |c, item| self.value(item) | c),
            Value::Object(fields) => fields
                .values_mut()
                .fold(false, |c, item| self.value(item) | c),
            _ => false,
        }
    }

    fn value_holds(&self, value: &Value) -> bool {
        match value {
            Value::String(text) => {
                self.automaton.is_match(text.as_str())
                    || nested_json(text).is_some_and(|inner| self.value_holds(&inner))
            }
            Value::Array(items) => items.iter().any(|item| self.value_holds(item)),
            Value::Object(fields) => fields
                .iter()
                .any(|(key, item)| self.automaton.is_match(key.as_str()) || self.value_holds(item)),
            _ => false,
        }
    }

    fn text(&self, text: &str) -> Option<String> {
        self.automaton
            .is_match(text)
            .then(|| self.automaton.replace_all(text, &self.to))
    }

    fn text_bytes<'b>(&self, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        match std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| self.text(text))
        {
            Some(rewritten) => Cow::Owned(rewritten.into_bytes()),
            None => Cow::Borrowed(bytes),
        }
    }
}

/// A string that is itself a JSON object or array (tool-call arguments), parsed.
fn nested_json(text: &str) -> Option<Value> {
    let start = text.trim_start().as_bytes().first()?;
    if *start != b'{' && *start != b'[' {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// A line and its line break (`\n` or `\r\n`, or none at the end).
fn split_line_ending(line: &str) -> (&str, &str) {
    if let Some(content) = line.strip_suffix("\r\n") {
        (content, "\r\n")
    } else if let Some(content) = line.strip_suffix('\n') {
        (content, "\n")
    } else {
        (line, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::guard::Action;
    use crate::edge::guard::testing::detectors;

    fn masker_of(text: &str) -> Masker {
        let mut masker = Masker::default();
        let detectors = detectors(&[("email", Action::Mask), ("private_key", Action::Mask)]);
        masker.mask(&detectors, text).unwrap();
        masker
    }

    const KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234567890abcdef\n-----END RSA PRIVATE KEY-----";

    #[test]
    fn values_in_every_form_are_masked_and_the_check_sees_what_is_left() {
        let masker = masker_of(&format!("mail bob@corp.com key {KEY}"));
        let remask = masker.remasker().unwrap();
        let arguments = serde_json::json!({"content": KEY, "to": "bob@corp.com"}).to_string();
        let whole = serde_json::json!({"choices": [{"message": {"content": "bob\u{40}corp.com",
            "tool_calls": [{"function": {"arguments": arguments}}]}}]});
        let escaped = serde_json::to_vec(&whole)
            .unwrap()
            .iter()
            .flat_map(|&b| {
                if b == b'@' {
                    b"\\u0040".to_vec()
                } else {
                    vec![b]
                }
            })
            .collect::<Vec<u8>>();
        for body in [serde_json::to_vec(&whole).unwrap(), escaped] {
            assert!(remask.leaves_any(&body));
            let recorded = remask.body(&body);
            assert!(
                !remask.leaves_any(&recorded),
                "{}",
                String::from_utf8_lossy(&recorded)
            );
            let text = String::from_utf8(recorded.into_owned()).unwrap();
            assert!(
                !text.contains("corp.com") && !text.contains("MIIE"),
                "{text}"
            );
        }
        let text = format!("upstream said: {KEY}");
        let recorded = remask.body(text.as_bytes());
        assert!(!remask.leaves_any(&recorded));
        let event = b"event: x\ndata: {\"delta\":\"bob\\u0040corp.com\"}\n: note bob@corp.com\n\n";
        let recorded = remask.event(event);
        assert!(
            !remask.leaves_any(&recorded),
            "{}",
            String::from_utf8_lossy(&recorded)
        );
        assert!(recorded.starts_with(b"event: x\ndata: ") && recorded.ends_with(b"\n\n"));
    }

    #[test]
    fn restoring_keeps_nested_json_valid_and_untouched_bytes_borrowed() {
        let masker = masker_of(&format!("key {KEY}"));
        let restore = masker.restorer().unwrap();
        let arguments = r#"{"content":"[PRIVATE_KEY_1]"}"#;
        let body = serde_json::to_vec(&serde_json::json!({"arguments": arguments})).unwrap();
        let restored: Value = serde_json::from_slice(&restore.body(&body)).unwrap();
        let inner: Value = serde_json::from_str(restored["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(inner["content"], KEY);
        let untouched = br#"{"b":1,"a":"x"}"#;
        assert!(matches!(restore.body(untouched), Cow::Borrowed(_)));
        assert!(matches!(
            restore.event(b"data: {\"a\":1}\n\n"),
            Cow::Borrowed(_)
        ));
        assert!(Masker::default().restorer().is_none());
    }
}
