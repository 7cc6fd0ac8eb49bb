//! Sensitive-data detection and masking: built-in detectors that validate what their pattern
//! finds (Luhn for cards, mod-97 for IBANs, ranges for SSNs and IP addresses), custom regexes,
//! and per-detector actions.
//!
//! A [`Masker`] works on one request: it numbers placeholders per detector (`[EMAIL_1]`), gives
//! the same value the same placeholder, and remembers originals so that reversible mode can put
//! them back in the reply.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use aho_corasick::{AhoCorasick, Input, MatchKind};
use regex::{Match, Regex, RegexBuilder, RegexSet, RegexSetBuilder, SetMatches};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config_error::{ConfigError, REGEX_SIZE_LIMIT, check_label_name};

mod stream;

pub use stream::{DeltaGuard, append_final_events, write_events};

/// What to do with a detected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replace it with a typed placeholder such as `[EMAIL_1]`.
    Mask,
    /// Refuse the request with a 400 naming the detector (never the value).
    Reject,
    /// Count it and let it through.
    Monitor,
}

/// A custom detector: a regular expression and what to do with its matches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// The detector's name, used in placeholders and errors (`[EMPLOYEE_ID_1]`).
    pub name: String,
    /// The pattern (linear-time engine, size-limited).
    pub regex: String,
    /// What to do with a match.
    pub action: Action,
}

/// The `guard` section of the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Built-in detectors to run, by name, with their action.
    #[serde(default)]
    pub detectors: BTreeMap<String, Action>,
    /// Custom detectors.
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
    /// Message roles whose content is scanned, compared without case (`system` covers
    /// instructions, Anthropic's `system` and tool descriptions; `user` prompts, `suffix` and
    /// `stop`). A message of a role llm-edge does not know is always scanned.
    #[serde(default = "all_roles")]
    pub roles: Vec<String>,
    /// Fields of the request body, by JSON Pointer, whose whole value is masked, refused or
    /// counted, such as `{"pointer": "/user", "name": "user_id", "action": "mask"}`.
    #[serde(default)]
    pub fields: Vec<FieldRule>,
    /// Scan tool-call arguments too (they stay valid JSON).
    #[serde(default = "yes")]
    pub tool_arguments: bool,
    /// Scan the upstream's replies too, in pass-through mode.
    #[serde(default)]
    pub responses: bool,
    /// Put the values masked in a request back into its reply, so the user sees real data and
    /// the provider never does.
    #[serde(default)]
    pub reversible: bool,
}

/// A field of the request body guarded whole, by JSON Pointer (RFC 6901).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// Where the field is, such as `/metadata/customer_id`.
    pub pointer: String,
    /// The name in placeholders and errors (`[CUSTOMER_ID_1]`).
    pub name: String,
    /// What to do with the field's value.
    pub action: Action,
}

fn all_roles() -> Vec<String> {
    ["system", "developer", "user", "assistant", "tool"]
        .map(str::to_owned)
        .to_vec()
}

fn yes() -> bool {
    true
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            detectors: BTreeMap::new(),
            custom: Vec::new(),
            fields: Vec::new(),
            roles: all_roles(),
            tool_arguments: true,
            responses: false,
            reversible: false,
        }
    }
}

/// The built-in detectors, by config name, most specific first: where matches overlap, the
/// earlier detector wins (custom detectors come before all of them).
pub const BUILT_IN: [&str; 13] = [
    "private_key",
    "jwt",
    "openai_key",
    "aws_access_key",
    "github_token",
    "slack_token",
    "iban",
    "credit_card",
    "us_ssn",
    "email",
    "ipv6",
    "ipv4",
    "phone",
];

/// One compiled detector.
#[derive(Debug, Clone)]
struct Detector {
    name: String,
    placeholder_prefix: String,
    regex: Regex,
    validate: Validator,
    action: Action,
    reach: Reach,
    hold: Hold,
}

/// Where in a text a detector looks for values. A pattern without a literal prefix costs a scan of
/// every byte (the lazy DFA, ~2 ns a byte each); a narrower reach skips most text and finds every
/// value all the same (the tests compare it with a search of the whole text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// The whole text (custom detectors: their patterns are the user's).
    Anywhere,
    /// The whole text, if it holds one of these literals: every value holds one. Two bytes or
    /// more each: a single byte among them turns off the vectorised search for all of them.
    Literals(&'static [&'static str]),
    /// The runs of bytes around certain bytes that [`Around::runs`] finds, of those that hold
    /// at least `digits` ASCII digits: every value lies in one, and holds that many.
    Runs {
        /// The bytes that the runs are found around.
        around: Around,
        /// The fewest ASCII digits in a value.
        digits: usize,
    },
}

/// A run of bytes where values can lie: `text[range]`, holding `digits` ASCII digits.
#[derive(Debug, Clone)]
struct Run {
    range: Range<usize>,
    digits: usize,
}

/// The bytes that values of a [`Reach::Runs`] detector are found around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Around {
    /// ASCII digits: phone numbers, cards, SSNs, IBANs, IPv4 addresses.
    Digits,
    /// Colons: IPv6 addresses.
    Colons,
    /// `@`: e-mail addresses.
    AtSigns,
}

/// The compiled detectors of one config.
#[derive(Debug, Default, Clone)]
pub struct Detectors {
    /// Custom detectors first, then the built-in ones.
    detectors: Vec<Detector>,
    /// The custom detectors' patterns in one set, in `detectors` order: one pass over a text
    /// tells which of them can match it, however many there are.
    custom: RegexSet,
    /// The literals of the detectors of [`Reach::Literals`], found in one vectorised pass
    /// (leftmost-first: overlapping ones are found by searching again from the next byte).
    literals: Option<AhoCorasick>,
    /// Which detector (its index in `detectors`) each literal, by pattern id, belongs to.
    literal_owners: Vec<usize>,
}

/// What [`Detectors::spans`] learns of one text, once for all detectors: where each looks.
struct Survey<'t> {
    text: &'t str,
    /// The custom detectors whose pattern matches somewhere in the text.
    custom: SetMatches,
    /// The detectors (by index, each once) whose literal the text holds.
    literals_found: Vec<usize>,
    /// The runs around each kind of byte, by [`Around`], found when a detector first needs them.
    runs: [OnceCell<Vec<Run>>; 3],
}

/// The windows of a text where one detector looks, in order: each a character-aligned range.
enum Windows<'s> {
    /// The whole text, or nothing.
    Whole(Option<Range<usize>>),
    /// The runs that hold at least `digits` digits.
    Runs {
        /// The runs around one kind of byte.
        runs: std::slice::Iter<'s, Run>,
        /// The fewest digits a value of the detector holds.
        digits: usize,
    },
}

impl Iterator for Windows<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        match self {
            Self::Whole(whole) => whole.take(),
            Self::Runs { runs, digits } => runs
                .find(|run| run.digits >= *digits)
                .map(|run| run.range.clone()),
        }
    }
}

/// A value a detector accepted: `text[start..end]`.
struct Span<'d> {
    start: usize,
    end: usize,
    detector: &'d Detector,
}

/// A refused request: which detector fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The detector's name.
    pub detector: String,
}

/// The detections of one detector and action, as counted in stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// The detector's name.
    pub detector: String,
    /// What was done.
    pub action: Action,
    /// How many values.
    pub count: u64,
}

fn always(_: &str) -> bool {
    true
}

impl Detectors {
    /// Compiles the built-in detectors named in `actions` and the custom ones. Returns
    /// `(field, message)` for an unknown detector or a bad regex.
    pub fn compile(
        actions: &BTreeMap<String, Action>,
        custom: &[CustomDetector],
    ) -> Result<Self, ConfigError> {
        // Where matches overlap the earlier detector wins: custom ones first, in config order,
        // then the built-in ones most specific first (BUILT_IN's order, not the config's).
        let mut detectors = Vec::new();
        for (i, detector) in custom.iter().enumerate() {
            let regex = RegexBuilder::new(&detector.regex)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    let pattern = &detector.regex;
                    ConfigError::new(
                        format!("guard.custom[{i}].regex"),
                        format!("invalid regex {pattern:?}: {e}"),
                    )
                })?;
            check_label_name(&format!("guard.custom[{i}].name"), &detector.name)?;
            detectors.push(Detector::new(
                &detector.name,
                regex,
                always,
                detector.action,
                (Reach::Anywhere, CUSTOM_HOLD),
            ));
        }
        if let Some(name) = actions.keys().find(|name| built_in(name).is_none()) {
            return Err(ConfigError::new(
                format!("guard.detectors.{name}"),
                format!(
                    "{name:?} is not a detector; allowed: {}",
                    BUILT_IN.join(", ")
                ),
            ));
        }
        for name in BUILT_IN {
            if let Some(&action) = actions.get(name) {
                let (pattern, validate, reach, hold) =
                    built_in(name).expect("BUILT_IN names built-in detectors");
                let regex = Regex::new(pattern).expect("built-in patterns compile");
                detectors.push(Detector::new(name, regex, validate, action, (reach, hold)));
            }
        }
        let mut literals: Vec<&str> = Vec::new();
        let mut literal_owners = Vec::new();
        for (index, detector) in detectors.iter().enumerate() {
            if let Reach::Literals(of_detector) = detector.reach {
                literals.extend(of_detector);
                literal_owners.extend(of_detector.iter().map(|_| index));
            }
        }
        let literals = (!literals.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(literals)
                .expect("the built-in literals compile")
        });
        let custom = RegexSetBuilder::new(custom.iter().map(|d| d.regex.as_str()))
            .size_limit(REGEX_SIZE_LIMIT * custom.len().max(1))
            .build()
            .map_err(|e| {
                ConfigError::new(
                    "guard.custom",
                    format!("the detectors together are too large: {e}"),
                )
            })?;
        Ok(Self {
            detectors,
            custom,
            literals,
            literal_owners,
        })
    }

    /// Whether no detector is configured.
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// The values in `text` that a detector accepts, in order: where matches overlap, the one
    /// of the detector listed first.
    fn spans(&self, text: &str) -> Vec<Span<'_>> {
        self.spans_from(text, 0)
    }

    /// [`Detectors::spans`] of the values that start at or after `from`, as a search of `text`
    /// from there finds them: `text[..from]` is only the left context a word boundary or an
    /// anchor at `from` is judged by (text of a stream already sent).
    fn spans_from(&self, text: &str, from: usize) -> Vec<Span<'_>> {
        // Each detector's matches come in order, as do the spans accepted so far, which never
        // overlap: one merge per detector, linear however many values a text holds.
        let mut spans: Vec<Span<'_>> = Vec::new();
        let survey = self.survey(text);
        for (index, detector) in self.detectors.iter().enumerate() {
            let mut windows = survey.windows(index, detector.reach).peekable();
            if windows.peek().is_none() {
                // Nowhere to look: the spans stay as they are, without a merge.
                continue;
            }
            let mut merged = Vec::with_capacity(spans.len());
            let mut accepted = spans.into_iter().peekable();
            for found in find_within(&detector.regex, text, from, windows) {
                while let Some(before) = accepted.next_if(|span| span.end <= found.start()) {
                    merged.push(before);
                }
                // The first accepted span that ends after this match starts overlaps it if it
                // also starts before the match ends. An empty match holds nothing to mask.
                let overlaps = accepted.peek().is_some_and(|span| span.start < found.end());
                if !overlaps && !found.is_empty() && (detector.validate)(found.as_str()) {
                    merged.push(Span {
                        start: found.start(),
                        end: found.end(),
                        detector,
                    });
                }
            }
            merged.extend(accepted);
            spans = merged;
        }
        spans
    }

    /// One pass over `text` for the custom detectors' set and one for the literals.
    fn survey<'t>(&self, text: &'t str) -> Survey<'t> {
        let mut literals_found = Vec::new();
        if let Some(literals) = &self.literals {
            let mut from = 0;
            while let Some(literal) = literals.find(Input::new(text).range(from..)) {
                let owner = self.literal_owners[literal.pattern().as_usize()];
                if !literals_found.contains(&owner) {
                    literals_found.push(owner);
                }
                from = literal.start() + 1;
            }
        }
        Survey {
            text,
            custom: self.custom.matches(text),
            literals_found,
            runs: Default::default(),
        }
    }
}

impl Survey<'_> {
    /// Where the detector at `index` in [`Detectors`] looks: nowhere if it cannot match.
    fn windows(&self, index: usize, reach: Reach) -> Windows<'_> {
        let whole_text_if = |found: bool| Windows::Whole(found.then_some(0..self.text.len()));
        match reach {
            Reach::Anywhere => whole_text_if(self.custom.matched(index)),
            Reach::Literals(_) => whole_text_if(self.literals_found.contains(&index)),
            Reach::Runs { around, digits } => Windows::Runs {
                runs: self.runs[around as usize]
                    .get_or_init(|| around.runs(self.text.as_bytes()))
                    .iter(),
                digits,
            },
        }
    }
}

/// The matches of `regex` in `text` from `from` on that lie within `windows` (in order,
/// disjoint, on character boundaries), in order: all that a search of the whole text from `from`
/// finds, if each lies in a window.
fn find_within<'t>(
    regex: &'t Regex,
    text: &'t str,
    from: usize,
    windows: impl Iterator<Item = Range<usize>> + 't,
) -> impl Iterator<Item = Match<'t>> + 't {
    windows
        .filter(move |window| window.end >= from)
        .flat_map(move |window| {
            // The search starts at the window's start in the whole text and ends one character past
            // the window, so a word boundary at either edge is judged as in the whole text.
            let past = text[window.end..].chars().next().map_or(0, char::len_utf8);
            let haystack = &text[..window.end + past];
            let mut at = window.start.max(from);
            std::iter::from_fn(move || {
                if at > haystack.len() {
                    return None;
                }
                let found = regex.find_at(haystack, at)?;
                at = match haystack[found.end()..].chars().next() {
                    // An empty match: the next search starts one character on.
                    Some(next) if found.is_empty() => found.end() + next.len_utf8(),
                    None if found.is_empty() => haystack.len() + 1,
                    _ => found.end(),
                };
                Some(found)
            })
        })
}

impl Around {
    /// The maximal runs of [`Around::holds`] bytes around each such byte in `bytes`, in order.
    /// Each ends where `bytes` does or at a byte that starts a character (members are ASCII, or
    /// whole characters): runs are on character boundaries.
    fn runs(self, bytes: &[u8]) -> Vec<Run> {
        let holds = |byte: u8| HOLDS[self as usize][usize::from(byte)];
        let mut runs = Vec::new();
        let mut end = 0;
        while let Some(anchor) = self.next(bytes, end) {
            // The byte at `end` ended the last run: the walk back stops there at the latest.
            let mut start = anchor;
            let mut digits = 0;
            while start > 0 && holds(bytes[start - 1]) {
                start -= 1;
                digits += usize::from(bytes[start].is_ascii_digit());
            }
            end = anchor;
            while let Some(&byte) = bytes.get(end).filter(|&&byte| holds(byte)) {
                digits += usize::from(byte.is_ascii_digit());
                end += 1;
            }
            runs.push(Run {
                range: start..end,
                digits,
            });
        }
        runs
    }

    /// The position of the first byte to look around in `bytes[from..]`.
    fn next(self, bytes: &[u8], from: usize) -> Option<usize> {
        let rest = &bytes[from..];
        let found = match self {
            Self::Digits => next_digit(rest),
            Self::Colons => memchr::memchr(b':', rest),
            Self::AtSigns => memchr::memchr(b'@', rest),
        };
        found.map(|at| from + at)
    }

    /// Whether `byte` can be part of a value found around these bytes.
    const fn holds(self, byte: u8) -> bool {
        match self {
            // Digits and capital letters (IBANs), separators (`+ . - ( )`, ASCII whitespace),
            // and the bytes of non-ASCII characters (`\s` matches Unicode spaces too).
            Self::Digits => {
                byte.is_ascii_digit()
                    || byte.is_ascii_uppercase()
                    || matches!(byte, b'+' | b'.' | b'-' | b'(' | b')')
                    || matches!(byte, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r')
                    || !byte.is_ascii()
            }
            Self::Colons => byte.is_ascii_hexdigit() || matches!(byte, b':' | b'.'),
            Self::AtSigns => {
                byte.is_ascii_alphanumeric()
                    || matches!(byte, b'.' | b'_' | b'%' | b'+' | b'-' | b'@')
            }
        }
    }
}

/// [`Around::holds`] of every byte, by [`Around`]: one lookup a byte where runs are walked.
const HOLDS: [[bool; 256]; 3] = {
    let mut tables = [[false; 256]; 3];
    let mut byte = 0;
    while byte < 256 {
        let value = byte as u8;
        tables[Around::Digits as usize][byte] = Around::Digits.holds(value);
        tables[Around::Colons as usize][byte] = Around::Colons.holds(value);
        tables[Around::AtSigns as usize][byte] = Around::AtSigns.holds(value);
        byte += 1;
    }
    tables
};

/// The position of the first ASCII digit in `bytes`. Prose has few digits, so it tests 32 bytes
/// at a time, without a branch per byte, which the compiler vectorises.
fn next_digit(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    for chunk in bytes.chunks(32) {
        if chunk.iter().fold(false, |any, b| any | b.is_ascii_digit()) {
            return chunk.iter().position(u8::is_ascii_digit).map(|i| at + i);
        }
        at += chunk.len();
    }
    None
}

impl GuardConfig {
    /// Whether the guard does anything: a detector or a field rule.
    pub fn is_active(&self, detectors: &Detectors) -> bool {
        !detectors.is_empty() || !self.fields.is_empty()
    }

    /// Checks the field rules.
    pub fn validate_fields(&self) -> Result<(), ConfigError> {
        for (i, rule) in self.fields.iter().enumerate() {
            if !rule.pointer.starts_with('/') {
                return Err(ConfigError::new(
                    format!("guard.fields[{i}].pointer"),
                    format!(
                        "{:?} is not a JSON Pointer; allowed: \"/field\" or \"/a/b/0\"",
                        rule.pointer
                    ),
                ));
            }
            check_label_name(&format!("guard.fields[{i}].name"), &rule.name)?;
        }
        Ok(())
    }
}

impl Detector {
    fn new(
        name: &str,
        regex: Regex,
        validate: Validator,
        action: Action,
        (reach, hold): (Reach, Hold),
    ) -> Self {
        Self {
            name: name.to_owned(),
            placeholder_prefix: name.to_ascii_uppercase(),
            regex,
            validate,
            action,
            reach,
            hold,
        }
    }
}

/// Checks a candidate a pattern found (a checksum, a range).
type Validator = fn(&str) -> bool;

/// The pattern, validator, reach and stream hold-back of a built-in detector.
///
/// Word boundaries are ASCII ones, `(?-u:\b)`: a CJK character or an accented letter next to a
/// number is a boundary, so values in prose without spaces are found; and the fast lazy DFA
/// handles them on any text, where a Unicode `\b` makes the regex engine fall back to a
/// ~40× slower one as soon as the text holds a non-ASCII character.
fn built_in(name: &str) -> Option<(&'static str, Validator, Reach, Hold)> {
    Some(match name {
        "email" => (
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            always,
            Reach::Runs {
                around: Around::AtSigns,
                digits: 0,
            },
            Hold::Run {
                class: email_char,
                starts: email_char,
                max: 254,
            },
        ),
        "phone" => (
            r"(?:\+[0-9]{1,3}[\s.-]?)?\(?(?-u:\b)[0-9]{3}\)?[\s.-][0-9]{3}[\s.-][0-9]{4}(?-u:\b)|\+[0-9]{7,15}(?-u:\b)",
            valid_phone,
            Reach::Runs {
                around: Around::Digits,
                digits: 7,
            },
            Hold::Run {
                class: phone_char,
                starts: number_start,
                max: 32,
            },
        ),
        "credit_card" => (
            r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)",
            valid_card,
            Reach::Runs {
                around: Around::Digits,
                digits: 13,
            },
            Hold::Run {
                class: card_char,
                starts: ascii_digit,
                max: 40,
            },
        ),
        "us_ssn" => (
            r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)",
            valid_ssn,
            Reach::Runs {
                around: Around::Digits,
                digits: 9,
            },
            Hold::Run {
                class: ssn_char,
                starts: ascii_digit,
                max: 12,
            },
        ),
        "iban" => (
            r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)",
            valid_iban,
            Reach::Runs {
                around: Around::Digits,
                digits: 2,
            },
            Hold::Run {
                class: iban_char,
                starts: ascii_upper,
                max: 64,
            },
        ),
        // Longer dotted runs (versions such as 1.2.3.4.5) match whole and then fail validation.
        "ipv4" => (
            r"(?-u:\b)(?:[0-9]+\.)?[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?:\.[0-9]+)*(?-u:\b)",
            valid_ipv4,
            Reach::Runs {
                around: Around::Digits,
                digits: 4,
            },
            Hold::Run {
                class: ipv4_char,
                starts: ascii_digit,
                max: 64,
            },
        ),
        "ipv6" => (
            r"[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*",
            valid_ipv6,
            Reach::Runs {
                around: Around::Colons,
                digits: 0,
            },
            Hold::Run {
                class: ipv6_char,
                starts: ipv6_char,
                max: 64,
            },
        ),
        "jwt" => (
            r"(?-u:\b)eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
            always,
            Reach::Literals(&["eyJ"]),
            Hold::Token {
                class: jwt_char,
                max: 8192,
            },
        ),
        "openai_key" => (
            r"(?-u:\b)sk-(?:proj-)?[A-Za-z0-9_-]{20,}",
            always,
            Reach::Literals(&["sk-"]),
            Hold::Token {
                class: key_char,
                max: 512,
            },
        ),
        "aws_access_key" => (
            r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)",
            always,
            Reach::Literals(&["AKIA", "ASIA"]),
            Hold::Token {
                class: aws_char,
                max: 20,
            },
        ),
        "github_token" => (
            r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
            always,
            Reach::Literals(&["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]),
            Hold::Token {
                class: github_char,
                max: 255,
            },
        ),
        "slack_token" => (
            r"(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}",
            always,
            Reach::Literals(&["xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-"]),
            Hold::Token {
                class: slack_char,
                max: 255,
            },
        ),
        "private_key" => (
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
            always,
            Reach::Literals(&["-----BEGIN "]),
            Hold::Block {
                begin: "-----BEGIN",
                end: "-----END",
                close: "KEY-----",
                max: 16 * 1024,
            },
        ),
        _ => return None,
    })
}

/// The decimal digits of `text`, in order.
fn digits(text: &str) -> impl DoubleEndedIterator<Item = u32> + '_ {
    text.chars().filter_map(|c| c.to_digit(10))
}

fn valid_phone(text: &str) -> bool {
    (10..=15).contains(&digits(text).count())
}

/// The Luhn checksum every payment card number satisfies.
fn valid_card(text: &str) -> bool {
    let (count, sum) = digits(text)
        .rev()
        .enumerate()
        .fold((0, 0), |(count, sum), (i, d)| {
            let term = match (i % 2, d * 2) {
                (1, doubled) if doubled > 9 => doubled - 9,
                (1, doubled) => doubled,
                _ => d,
            };
            (count + 1, sum + term)
        });
    (13..=19).contains(&count) && sum % 10 == 0
}

/// Area 001–899 but not 666, group not 00, serial not 0000.
fn valid_ssn(text: &str) -> bool {
    let parts: Vec<u32> = text.split('-').filter_map(|p| p.parse().ok()).collect();
    matches!(parts.as_slice(), [area, group, serial]
        if *area != 0 && *area != 666 && *area < 900 && *group != 0 && *serial != 0)
}

/// The ISO 13616 mod-97 check. Works on characters, never on byte offsets: a pattern's match may
/// hold any character, and a slice inside one is a panic.
fn valid_iban(text: &str) -> bool {
    let compact: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) || !compact.iter().all(char::is_ascii_alphanumeric) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder = 0u32;
    for c in tail.iter().chain(head) {
        let Some(value) = c.to_digit(36) else {
            return false;
        };
        // One or two decimal digits, appended as the check's long number would hold them.
        remainder = if value < 10 {
            (remainder * 10 + value) % 97
        } else {
            (remainder * 100 + value) % 97
        };
    }
    remainder == 1
}

fn valid_ipv4(text: &str) -> bool {
    text.parse::<std::net::Ipv4Addr>().is_ok()
}

fn valid_ipv6(text: &str) -> bool {
    text.matches(':').count() >= 2 && text.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Masks the texts of one request (and, reversed, its reply).
#[derive(Debug, Default)]
pub struct Masker {
    /// Original value → placeholder.
    placeholders: HashMap<String, String>,
    /// Placeholder → original value, for reversible mode.
    originals: HashMap<String, String>,
    /// New values a reply held → their (not restorable) placeholder: the same value gets the same
    /// placeholder in every event and text of one reply, deltas and finished texts alike.
    reply_values: HashMap<String, String>,
    /// Next number per detector.
    counters: HashMap<String, usize>,
    /// Every detection, for stats.
    pub detections: Vec<Detection>,
}

impl Masker {
    /// Masks `text`: masked values become placeholders; a `reject` detection refuses the whole
    /// request. Overlapping matches go to the detector listed first. A text with nothing to mask
    /// comes back borrowed.
    pub fn mask<'t>(
        &mut self,
        detectors: &Detectors,
        text: &'t str,
    ) -> Result<Cow<'t, str>, Rejected> {
        let spans = detectors.spans(text);
        if spans.is_empty() {
            return Ok(Cow::Borrowed(text));
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for Span {
            start,
            end,
            detector,
        } in spans
        {
            self.detected(&detector.name, detector.action);
            match detector.action {
                Action::Reject => {
                    return Err(Rejected {
                        detector: detector.name.clone(),
                    });
                }
                Action::Monitor => continue,
                Action::Mask => {}
            }
            out.push_str(&text[at..start]);
            let placeholder = self.placeholder_named(
                &detector.name,
                &detector.placeholder_prefix,
                &text[start..end],
            );
            out.push_str(placeholder);
            at = end;
        }
        if at == 0 {
            // Only monitored values: the text stays as it was.
            return Ok(Cow::Borrowed(text));
        }
        out.push_str(&text[at..]);
        Ok(Cow::Owned(out))
    }

    /// Counts one detection of `detector`, tallied per detector and action.
    fn detected(&mut self, detector: &str, action: Action) {
        match self
            .detections
            .iter_mut()
            .find(|seen| seen.detector == detector && seen.action == action)
        {
            Some(seen) => seen.count += 1,
            None => self.detections.push(Detection {
                detector: detector.to_owned(),
                action,
                count: 1,
            }),
        }
    }

    /// The placeholder of `value`: the one it already has, or the detector's next.
    fn placeholder_named(&mut self, name: &str, prefix: &str, value: &str) -> &str {
        if !self.placeholders.contains_key(value) {
            let placeholder = self.next_placeholder(name, prefix);
            self.originals.insert(placeholder.clone(), value.to_owned());
            self.placeholders.insert(value.to_owned(), placeholder);
        }
        &self.placeholders[value]
    }

    /// Masks values in a reply that the request did not hold (those the user already knows stay,
    /// and a `reject` detector masks: a reply cannot be refused after the fact). New placeholders
    /// are not restorable; a new value gets the same one wherever the reply holds it.
    pub fn mask_new(&mut self, detectors: &Detectors, text: &str) -> String {
        self.mask_new_between(detectors, text, 0, text.len())
    }

    /// [`Masker::mask_new`] of `text[from..cut]`, with the values found in the whole of `text`
    /// from `from` on: the part of a streamed text sent now is judged as the text it is part
    /// of, with `text[..from]` the text already sent before it (so a word boundary at `from` is
    /// judged as in the whole text) and `text[cut..]` what is held after it (a value's end is
    /// where the text says, not where the cut falls). No value may straddle `cut`.
    pub fn mask_new_between(
        &mut self,
        detectors: &Detectors,
        text: &str,
        from: usize,
        cut: usize,
    ) -> String {
        let mut out = String::with_capacity(cut - from);
        let mut at = from;
        let spans = detectors.spans_from(text, from);
        for Span {
            start,
            end,
            detector,
        } in spans.into_iter().take_while(|span| span.end <= cut)
        {
            let action = match detector.action {
                Action::Reject => Action::Mask,
                action => action,
            };
            self.detected(&detector.name, action);
            if action == Action::Monitor {
                continue;
            }
            let value = &text[start..end];
            out.push_str(&text[at..start]);
            if self.placeholders.contains_key(value) {
                // The request's own value: the user already knows it.
                out.push_str(value);
            } else {
                if !self.reply_values.contains_key(value) {
                    let placeholder =
                        self.next_placeholder(&detector.name, &detector.placeholder_prefix);
                    self.reply_values.insert(value.to_owned(), placeholder);
                }
                out.push_str(&self.reply_values[value]);
            }
            at = end;
        }
        out.push_str(&text[at..cut]);
        out
    }

    /// The next placeholder of a detector: `[PREFIX_n]`, numbered per detector name.
    fn next_placeholder(&mut self, name: &str, prefix: &str) -> String {
        let n = self.counters.entry(name.to_owned()).or_insert(0);
        *n += 1;
        format!("[{prefix}_{n}]")
    }

    /// Puts the original values back in place of this request's placeholders.
    pub fn restore(&self, text: &str) -> String {
        if self.originals.is_empty() || !text.contains('[') {
            return text.to_owned();
        }
        let mut out = text.to_owned();
        for (placeholder, original) in &self.originals {
            out = out.replace(placeholder.as_str(), original);
        }
        out
    }

    /// Whether any value was masked.
    pub fn masked_anything(&self) -> bool {
        !self.originals.is_empty()
    }

    /// Where a placeholder of this request that holds `text[cut]` starts: a cut there would
    /// split it, and neither half would be restored.
    pub fn placeholder_around(&self, text: &str, cut: usize) -> Option<usize> {
        let open = text.get(..cut)?.rfind('[')?;
        let close = open + text[open..].find(']')?;
        (close >= cut && self.originals.contains_key(&text[open..=close])).then_some(open)
    }

    /// How many trailing bytes of `text` could be the start of one of this request's
    /// placeholders, and so must wait for the next chunk before they are restored.
    pub fn placeholder_holdback(&self, text: &str) -> usize {
        let Some(open) = text.rfind('[') else {
            return 0;
        };
        let tail = &text[open..];
        let could_complete = self
            .originals
            .keys()
            .any(|p| p.len() > tail.len() && p.starts_with(tail));
        if could_complete { tail.len() } else { 0 }
    }
}

/// Guards a request body in place. `model` first: a value any enabled detector finds there
/// refuses the request, whatever its action (the model goes to a header and the access log, and
/// masking it would change the routing). Then field rules, then every string the model reads:
/// messages and input items whole, by role (see [`in_scope`]), but for their
/// [`STRUCTURAL_KEYS`]; tool-call arguments when `tool_arguments` is on, whatever the role, kept
/// valid JSON; instructions and tool and schema descriptions (system); prompts, predictions,
/// `suffix` and `stop` (user); `metadata`, `user` and `safety_identifier` always. Returns
/// whether anything was masked.
pub fn guard_request(
    body: &mut Map<String, Value>,
    config: &GuardConfig,
    detectors: &Detectors,
    masker: &mut Masker,
) -> Result<bool, Rejected> {
    if let Some(Value::String(model)) = body.get("model") {
        if let Some(span) = detectors.spans(model).first() {
            let detector = span.detector.name.clone();
            masker.detected(&detector, Action::Reject);
            return Err(Rejected { detector });
        }
    }
    let mut walker = Walker {
        config,
        detectors,
        masker,
        changed: false,
    };
    for rule in &config.fields {
        let Some(value) = scalar_at(body, &rule.pointer) else {
            continue;
        };
        walker.masker.detected(&rule.name, rule.action);
        match rule.action {
            Action::Reject => {
                return Err(Rejected {
                    detector: rule.name.clone(),
                });
            }
            Action::Monitor => {}
            Action::Mask => {
                let text = match &*value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let prefix = rule.name.to_ascii_uppercase();
                let placeholder = walker.masker.placeholder_named(&rule.name, &prefix, &text);
                *value = Value::String(placeholder.to_owned());
                walker.changed = true;
            }
        }
    }
    let system = in_scope(&config.roles, "system");
    let user = in_scope(&config.roles, "user");
    for key in ["system", "instructions"] {
        if let Some(value) = body.get_mut(key) {
            walker.strings(value, system)?;
        }
    }
    // Tool definitions and output schemas: their descriptions are instructions to the model.
    for key in ["tools", "functions", "response_format", "text"] {
        if let Some(value) = body.get_mut(key).filter(|_| system) {
            walker.descriptions(value)?;
        }
    }
    match body.get_mut("prompt") {
        // The Responses API's prompt template: its variables are the user's text.
        Some(Value::Object(template)) => {
            if let Some(Value::Object(variables)) = template.get_mut("variables") {
                for variable in variables.values_mut() {
                    walker.strings(variable, user)?;
                }
            }
        }
        Some(prompt) => walker.strings(prompt, user)?,
        None => {}
    }
    // Predicted output: text the user expects back (a file to edit), theirs to guard. The
    // legacy `suffix` is model input; `stop` sequences are the user's too.
    if let Some(content) = body
        .get_mut("prediction")
        .and_then(|p| p.get_mut("content"))
    {
        walker.strings(content, user)?;
    }
    for key in ["suffix", "stop"] {
        if let Some(value) = body.get_mut(key) {
            walker.strings(value, user)?;
        }
    }
    // The provider sees these whatever the roles: every string in them, keys aside.
    for key in ["metadata", "user", "safety_identifier"] {
        if let Some(value) = body.get_mut(key) {
            walker.json_strings(value)?;
        }
    }
    for key in ["messages", "input"] {
        match body.get_mut(key) {
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::Object(_) => walker.message(item)?,
                        // Embeddings' and legacy inputs: texts, or lists of them (token ids stay).
                        other => walker.strings(other, user)?,
                    }
                }
            }
            Some(text) => walker.strings(text, user)?,
            None => {}
        }
    }
    Ok(walker.changed)
}

/// The scalar value at a JSON Pointer in the body, if there is one.
fn scalar_at<'a>(body: &'a mut Map<String, Value>, pointer: &str) -> Option<&'a mut Value> {
    let (first, rest) = pointer
        .strip_prefix('/')?
        .split_once('/')
        .map_or((pointer.strip_prefix('/')?, ""), |(f, r)| (f, r));
    let first = first.replace("~1", "/").replace("~0", "~");
    let value = body.get_mut(&first)?;
    let value = if rest.is_empty() {
        value
    } else {
        value.pointer_mut(&format!("/{rest}"))?
    };
    (!value.is_object() && !value.is_array() && !value.is_null()).then_some(value)
}

/// One text of a reply, guarded whole: the request's values restored (reversible mode) and new
/// ones masked (response scanning).
pub fn guard_text(
    config: &GuardConfig,
    detectors: &Detectors,
    masker: &mut Masker,
    text: &str,
) -> String {
    let restored = if config.reversible {
        masker.restore(text)
    } else {
        text.to_owned()
    };
    if config.responses {
        masker.mask_new(detectors, &restored)
    } else {
        restored
    }
}

/// Guards a JSON reply in place: restores the request's values (reversible mode) and masks new
/// ones (response scanning) in every string of it but the [`STRUCTURAL`] ones, in any shape
/// (error bodies and events included); with response scanning, `logprobs` go (see
/// [`visit_reply_strings`]). Returns whether anything changed.
pub fn guard_reply(
    reply: &mut Value,
    config: &GuardConfig,
    detectors: &Detectors,
    masker: &mut Masker,
) -> bool {
    let mut fix = |text: &mut String| {
        let out = guard_text(config, detectors, masker, text);
        let changed = out != *text;
        if changed {
            *text = out;
        }
        changed
    };
    visit_reply_strings(reply, config.responses, &mut fix)
}

/// How much of the end of a streamed text one detector holds back: the longest tail that could
/// still grow into one of its values, never more than its longest value.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// The trailing run of characters of `class`, from the first one that can start a value,
    /// within the last `max` bytes.
    Run {
        /// The characters a value holds.
        class: fn(char) -> bool,
        /// The characters a value can start with.
        starts: fn(char) -> bool,
        /// The longest value, in bytes.
        max: usize,
    },
    /// Tokens that start with one of the detector's literals: the trailing run of `class` from
    /// the first literal in it, or from an unfinished literal at the very end.
    Token {
        /// The characters a token holds.
        class: fn(char) -> bool,
        /// The longest token held, in bytes.
        max: usize,
    },
    /// A block from `begin` that has not reached `end` and then `close` yet, or an unfinished
    /// `begin`.
    Block {
        /// What opens a block.
        begin: &'static str,
        /// What starts its last line.
        end: &'static str,
        /// What ends its last line.
        close: &'static str,
        /// The longest block held, in bytes.
        max: usize,
    },
}

/// Custom detectors' patterns are the user's: their tail is the trailing run of characters other
/// than whitespace, up to 256 bytes, as the guard held for every detector before it knew them.
const CUSTOM_HOLD: Hold = Hold::Run {
    class: not_whitespace,
    starts: not_whitespace,
    max: 256,
};

fn not_whitespace(c: char) -> bool {
    !c.is_whitespace()
}

fn ascii_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn ascii_upper(c: char) -> bool {
    c.is_ascii_uppercase()
}

fn email_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-@".contains(c)
}

/// Phone numbers: digits, `+ ( ) . -` and the whitespace `\s` matches (line breaks included).
fn phone_char(c: char) -> bool {
    c.is_ascii_digit() || "+().-".contains(c) || c.is_whitespace()
}

fn number_start(c: char) -> bool {
    c.is_ascii_digit() || c == '+' || c == '('
}

fn card_char(c: char) -> bool {
    c.is_ascii_digit() || c == ' ' || c == '-'
}

fn ssn_char(c: char) -> bool {
    c.is_ascii_digit() || c == '-'
}

fn iban_char(c: char) -> bool {
    c.is_ascii_digit() || c.is_ascii_uppercase() || c == ' '
}

fn ipv4_char(c: char) -> bool {
    c.is_ascii_digit() || c == '.'
}

fn ipv6_char(c: char) -> bool {
    c.is_ascii_hexdigit() || c == ':' || c == '.'
}

fn jwt_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.".contains(c)
}

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn aws_char(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}

fn github_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn slack_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// The start of the trailing run of `class` characters of `text` that lies within its last
/// `max` bytes: always a character boundary.
fn run_start(text: &str, class: fn(char) -> bool, max: usize) -> usize {
    let floor = text.len().saturating_sub(max);
    let mut start = text.len();
    for (at, c) in text.char_indices().rev() {
        if at < floor || !class(c) {
            break;
        }
        start = at;
    }
    start
}

impl Hold {
    /// Where the held tail of `text` starts (`text.len()` for none), for a detector whose
    /// literals, if it has any, are `literals`.
    fn start(self, text: &str, literals: &[&str]) -> usize {
        match self {
            Self::Run { class, starts, max } => {
                let run = run_start(text, class, max);
                text[run..]
                    .char_indices()
                    .find(|&(_, c)| starts(c))
                    .map_or(text.len(), |(at, _)| run + at)
            }
            Self::Token { class, max } => {
                let run = run_start(text, class, max);
                let tail = &text[run..];
                // Class characters are ASCII: every byte of the run is a character boundary.
                (0..tail.len())
                    .find(|&at| {
                        let rest = &tail[at..];
                        literals
                            .iter()
                            .any(|literal| rest.starts_with(literal) || literal.starts_with(rest))
                    })
                    .map_or(text.len(), |at| run + at)
            }
            Self::Block {
                begin,
                end,
                close,
                max,
            } => {
                let floor = floor_boundary(text, text.len().saturating_sub(max));
                let window = &text[floor..];
                if let Some(open) = window.rfind(begin) {
                    let block = &window[open..];
                    let closed = block
                        .find(end)
                        .is_some_and(|last| block[last..].contains(close));
                    if !closed {
                        return floor + open;
                    }
                }
                // An unfinished `begin` at the very end.
                (1..begin.len())
                    .rev()
                    .find(|&n| window.ends_with(&begin[..n]))
                    .map_or(text.len(), |n| text.len() - n)
            }
        }
    }

    /// The most bytes this hold keeps.
    fn max(self) -> usize {
        match self {
            Self::Run { max, .. } | Self::Token { max, .. } | Self::Block { max, .. } => max,
        }
    }
}

/// The largest character boundary of `text` at or before `at`.
fn floor_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

impl Detectors {
    /// Where a streamed text can be cut: before the longest tail that any detector could still
    /// extend into one of its values, and never inside a value found in the text. What follows
    /// the cut waits for more text; what comes before it can be guarded and sent.
    pub fn safe_cut(&self, text: &str) -> usize {
        self.safe_cut_from(text, 0)
    }

    /// [`Detectors::safe_cut`] of `text[from..]`, its values judged with `text[..from]` (text
    /// already sent) before them. Returns a cut in `text`, at `from` or after.
    pub fn safe_cut_from(&self, text: &str, from: usize) -> usize {
        let part = &text[from..];
        let mut cut = part.len();
        for detector in &self.detectors {
            let literals = match detector.reach {
                Reach::Literals(literals) => literals,
                _ => &[],
            };
            cut = cut.min(detector.hold.start(part, literals));
        }
        let cut = from + cut;
        if cut == from || cut == text.len() {
            return cut;
        }
        // A match that starts before the cut and goes past it (one whose tail was longer than
        // its detector holds) is held whole, or sent whole if that would hold too much. Every
        // detector's matches count, not only values that win an overlap now: the winner may
        // stop being a value as more text comes (`123-45-6789` then `1`), and the value it hid
        // becomes one, in a text whose start is already sent. And a match its check refuses
        // too: the search of the whole text goes on after it, so a value that starts inside it
        // is none there, and must be none in the stream.
        let values = self.matches_from(text, from);
        let mut cut = cut;
        for _ in 0..=values.len() {
            let straddling = values
                .iter()
                .filter(|(start, end)| *start < cut && cut < *end);
            let Some(&(start, end)) = straddling.min_by_key(|(start, _)| *start) else {
                break;
            };
            cut = if text.len() - start <= self.max_holdback() {
                start
            } else {
                end
            };
        }
        cut
    }

    /// Every match of every detector's pattern in `text` from `from` on, overlapping or not,
    /// checked or not.
    fn matches_from(&self, text: &str, from: usize) -> Vec<(usize, usize)> {
        let survey = self.survey(text);
        let mut matches = Vec::new();
        for (index, detector) in self.detectors.iter().enumerate() {
            let windows = survey.windows(index, detector.reach);
            for found in find_within(&detector.regex, text, from, windows) {
                matches.push((found.start(), found.end()));
            }
        }
        matches
    }

    /// The most bytes [`Detectors::safe_cut`] holds back: the longest value of any detector.
    pub fn max_holdback(&self) -> usize {
        self.detectors
            .iter()
            .map(|detector| detector.hold.max())
            .max()
            .unwrap_or(0)
    }
}

/// The text fields of a chat message or delta: its content, its reasoning (DeepSeek's and vLLM's
/// `reasoning_content`, OpenRouter's `reasoning`) and a refusal.
pub(crate) const CHAT_TEXTS: [&str; 4] = ["content", "reasoning_content", "reasoning", "refusal"];

/// Keys whose string values are identifiers or names the API defines, not text, and which a
/// reply's strings are guarded without: ids, types, roles, the model, reasons, statuses, tiers, and
/// the opaque `signature` (Anthropic's thinking) and `encrypted_content` (Responses' reasoning)
/// that a client hands back as they are. A function's or tool's `name` (in an object that also
/// holds its `arguments`, `input` or `input_schema`) is one too.
pub(crate) const STRUCTURAL: [&str; 15] = [
    "id",
    "object",
    "type",
    "role",
    "model",
    "finish_reason",
    "stop_reason",
    "status",
    "call_id",
    "item_id",
    "tool_use_id",
    "system_fingerprint",
    "service_tier",
    "signature",
    "encrypted_content",
];

/// Calls `visit` (which says whether it changed the string) on every string of a reply but
/// those of [`STRUCTURAL`] keys: a model can write into any field, so none is trusted to hold
/// no value. Tool-call `arguments` that are JSON are visited string by string and stay valid
/// JSON; tool `input` objects are data, visited whole. With `strip_logprobs`, every `logprobs`
/// (chat's and legacy's object, Responses' arrays) goes, to `null` or `[]`: its tokens spell
/// the text a piece at a time, where no value can be found. Returns whether anything changed.
fn visit_reply_strings(
    value: &mut Value,
    strip_logprobs: bool,
    visit: &mut impl FnMut(&mut String) -> bool,
) -> bool {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            visit_reply_strings(item, strip_logprobs, visit) | changed
        }),
        Value::Object(fields) => {
            let tool = ["arguments", "input", "input_schema"]
                .iter()
                .any(|key| fields.contains_key(*key));
            let mut changed = false;
            for (key, field) in fields.iter_mut() {
                changed |= match (key.as_str(), field) {
                    ("logprobs", Value::Array(tokens)) if strip_logprobs => {
                        let had = !tokens.is_empty();
                        tokens.clear();
                        had
                    }
                    ("logprobs", logprobs) if strip_logprobs => !std::mem::take(logprobs).is_null(),
                    (key, Value::String(_))
                        if STRUCTURAL.contains(&key) || (tool && key == "name") =>
                    {
                        false
                    }
                    ("arguments", Value::String(arguments)) => visit_arguments(arguments, visit),
                    ("input", input) => visit_json_strings(input, visit),
                    (_, field) => visit_reply_strings(field, strip_logprobs, visit),
                };
            }
            changed
        }
        _ => false,
    }
}

/// Tool-call arguments: a JSON object or array is visited string by string and written back only
/// if one changed, so the arguments stay valid JSON; anything else is visited as text.
fn visit_arguments(arguments: &mut String, visit: &mut impl FnMut(&mut String) -> bool) -> bool {
    match serde_json::from_str::<Value>(arguments) {
        Ok(mut parsed @ (Value::Object(_) | Value::Array(_))) => {
            let changed = visit_json_strings(&mut parsed, visit);
            if changed {
                *arguments = parsed.to_string();
            }
            changed
        }
        _ => visit(arguments),
    }
}

/// Every string of a JSON value, whatever its key: data, not the API's structure.
fn visit_json_strings(value: &mut Value, visit: &mut impl FnMut(&mut String) -> bool) -> bool {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            visit_json_strings(item, visit) | changed
        }),
        Value::Object(fields) => fields.values_mut().fold(false, |changed, field| {
            visit_json_strings(field, visit) | changed
        }),
        _ => false,
    }
}

/// The roles llm-edge knows (`function`, the legacy one, counts as `tool`): a message of any
/// other role is scanned whatever `roles` says, since self-hosted upstreams (vLLM, llama.cpp,
/// Ollama) hand any role string to the model.
const KNOWN_ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// Keys of a message, input item or content part whose values are identifiers, enums or opaque
/// tokens, not text the model reads: never scanned, as masking them would break the request. A
/// `name` is one (a called tool's or function's) except on a message, where it is its author's.
pub(crate) const STRUCTURAL_KEYS: [&str; 16] = [
    "type",
    "role",
    "id",
    "call_id",
    "tool_call_id",
    "tool_use_id",
    "file_id",
    "name",
    "media_type",
    "mime_type",
    "cache_control",
    "signature",
    "encrypted_content",
    "status",
    "format",
    "detail",
];

/// Keys of a JSON schema whose values are part of the contract, not prose: left as they are.
const SCHEMA_VALUES: [&str; 4] = ["enum", "const", "default", "examples"];

/// Keys of a JSON schema whose values map names (never masked) to schemas.
const SCHEMA_MAPS: [&str; 5] = [
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// Whether the text of a message of `role` is scanned: the roles in `roles`, compared without
/// ASCII case, `function` counting as `tool`; a role llm-edge does not know is always scanned.
fn in_scope(roles: &[String], role: &str) -> bool {
    let role = if role.eq_ignore_ascii_case("function") {
        "tool"
    } else {
        role
    };
    !KNOWN_ROLES
        .iter()
        .any(|known| known.eq_ignore_ascii_case(role))
        || roles.iter().any(|r| r.eq_ignore_ascii_case(role))
}

/// The role a message or input item counts as: Responses' `*_output` items are `tool`, its
/// `*_call` and `reasoning` items `assistant`; a message without a role is `user`'s; any other
/// item type, or a role that is not a string, is unknown (so always scanned).
fn role_of(item: &Value) -> &str {
    match item.get("type").and_then(Value::as_str) {
        Some(kind) if kind.ends_with("_output") => "tool",
        Some(kind) if kind.ends_with("_call") || kind == "reasoning" => "assistant",
        Some("message") | None => match item.get("role") {
            Some(Value::String(role)) => role,
            None => "user",
            Some(_) => "",
        },
        Some(_) => "",
    }
}

/// A `data:` URL's media type and base64 payload, if it is one.
fn base64_data_url(text: &str) -> Option<(&str, &str)> {
    let (head, payload) = text.strip_prefix("data:")?.split_once(',')?;
    Some((head.strip_suffix(";base64")?, payload))
}

struct Walker<'a> {
    config: &'a GuardConfig,
    detectors: &'a Detectors,
    masker: &'a mut Masker,
    changed: bool,
}

impl Walker<'_> {
    fn text(&mut self, text: &mut String) -> Result<(), Rejected> {
        if let Cow::Owned(masked) = self.masker.mask(self.detectors, text)? {
            if masked != *text {
                *text = masked;
                self.changed = true;
            }
        }
        Ok(())
    }

    /// A string of a message: text, or a base64 `data:` URL, whose payload is guarded decoded
    /// if it is text and left alone if it is binary (an image, a PDF: not text to scan).
    fn leaf(&mut self, text: &mut String) -> Result<(), Rejected> {
        let Some((media_type, payload)) = base64_data_url(text) else {
            return self.text(text);
        };
        let head_len = text.len() - payload.len();
        let media_type = media_type.to_owned();
        let mut payload = payload.to_owned();
        if self.base64(&media_type, &mut payload)? {
            text.truncate(head_len);
            text.push_str(&payload);
        }
        Ok(())
    }

    /// Base64 data of `media_type`: text (`text/*`) is decoded, guarded and encoded again;
    /// binary is left alone; what does not decode as UTF-8 text from base64 is guarded as text.
    /// Returns whether `data` changed.
    fn base64(&mut self, media_type: &str, data: &mut String) -> Result<bool, Rejected> {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        let is_text = media_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("text/"));
        let Ok(decoded) = STANDARD.decode(data.as_bytes()) else {
            let before = data.clone();
            self.text(data)?;
            return Ok(*data != before);
        };
        if !is_text {
            return Ok(false);
        }
        let Ok(mut decoded) = String::from_utf8(decoded) else {
            return Ok(false);
        };
        let before = self.changed;
        self.changed = false;
        self.text(&mut decoded)?;
        let changed = self.changed;
        if changed {
            *data = STANDARD.encode(decoded);
        }
        self.changed |= before;
        Ok(changed)
    }

    /// Every string in `value` when `scan`, but for [`STRUCTURAL_KEYS`]; tool-call arguments
    /// (`arguments`, a tool use's `input`) when `tool_arguments` is on, whether `scan` or not.
    fn strings(&mut self, value: &mut Value, scan: bool) -> Result<(), Rejected> {
        match value {
            Value::String(text) if scan => self.leaf(text),
            Value::Array(items) => items
                .iter_mut()
                .try_for_each(|item| self.strings(item, scan)),
            Value::Object(fields) => self.fields(fields, scan),
            _ => Ok(()),
        }
    }

    fn fields(&mut self, fields: &mut Map<String, Value>, scan: bool) -> Result<(), Rejected> {
        let message = fields.contains_key("role");
        for (key, value) in fields.iter_mut() {
            match (key.as_str(), value) {
                ("arguments" | "input", value) => {
                    if self.config.tool_arguments {
                        match value {
                            Value::String(arguments) => self.arguments(arguments)?,
                            other => self.json_strings(other)?,
                        }
                    }
                }
                ("name", value) if message => self.strings(value, scan)?,
                (key, _) if STRUCTURAL_KEYS.contains(&key) => {}
                // Anthropic's base64 sources: a text/plain document is guarded decoded.
                ("source", Value::Object(source))
                    if source.get("type").and_then(Value::as_str) == Some("base64") =>
                {
                    let media_type = source
                        .get("media_type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    match source.get_mut("data") {
                        // `changed` is kept by the guarding itself.
                        Some(Value::String(data)) if scan => {
                            self.base64(&media_type, data)?;
                        }
                        Some(other) => self.strings(other, scan)?,
                        None => {}
                    }
                }
                (_, value) => self.strings(value, scan)?,
            }
        }
        Ok(())
    }

    /// The descriptions in tool definitions and JSON schemas (never names, enums or defaults).
    fn descriptions(&mut self, value: &mut Value) -> Result<(), Rejected> {
        match value {
            Value::Array(items) => items
                .iter_mut()
                .try_for_each(|item| self.descriptions(item)),
            Value::Object(fields) => {
                for (key, value) in fields.iter_mut() {
                    match (key.as_str(), value) {
                        ("description", Value::String(text)) => self.text(text)?,
                        (key, _) if SCHEMA_VALUES.contains(&key) => {}
                        (key, Value::Object(schemas)) if SCHEMA_MAPS.contains(&key) => {
                            for schema in schemas.values_mut() {
                                self.descriptions(schema)?;
                            }
                        }
                        (_, value) => self.descriptions(value)?,
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Tool-call arguments: a JSON string whose string values are guarded one by one, so the
    /// arguments stay valid JSON; not JSON, they are guarded as text.
    fn arguments(&mut self, arguments: &mut String) -> Result<(), Rejected> {
        let Ok(mut parsed) = serde_json::from_str::<Value>(arguments) else {
            return self.text(arguments);
        };
        let before = self.changed;
        self.changed = false;
        self.json_strings(&mut parsed)?;
        if self.changed {
            *arguments = parsed.to_string();
        }
        self.changed |= before;
        Ok(())
    }

    /// Every string in `value`, whatever its key.
    fn json_strings(&mut self, value: &mut Value) -> Result<(), Rejected> {
        match value {
            Value::String(text) => self.text(text),
            Value::Array(items) => items
                .iter_mut()
                .try_for_each(|item| self.json_strings(item)),
            Value::Object(fields) => fields
                .values_mut()
                .try_for_each(|field| self.json_strings(field)),
            _ => Ok(()),
        }
    }

    /// One message or input item: every string in it when its role ([`role_of`]) is in scope,
    /// content blocks and all; its tool-call arguments when `tool_arguments` is on.
    fn message(&mut self, item: &mut Value) -> Result<(), Rejected> {
        let scan = in_scope(&self.config.roles, role_of(item));
        self.strings(item, scan)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    fn detectors(pairs: &[(&str, Action)]) -> Detectors {
        let actions = pairs.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect();
        Detectors::compile(&actions, &[]).unwrap()
    }

    /// Every built-in detector, masking: compiled once for all the tests that use it.
    fn every_detector() -> &'static Detectors {
        static EVERY: std::sync::OnceLock<Detectors> = std::sync::OnceLock::new();
        EVERY.get_or_init(|| {
            let all: Vec<(&str, Action)> = BUILT_IN.iter().map(|n| (*n, Action::Mask)).collect();
            detectors(&all)
        })
    }

    fn mask_all(text: &str) -> String {
        Masker::default()
            .mask(every_detector(), text)
            .unwrap()
            .into_owned()
    }

    /// Pieces of text that random texts are made of: values of every detector (some at the
    /// fewest digits their pattern allows), their near misses, the bytes runs stop and go on at,
    /// literals that overlap ("sk" + "-----BEGIN"), and prose in several scripts.
    #[rustfmt::skip]
    const FRAGMENTS: &[&str] = &[
        "4111 1111 1111 1111", "4111-1111-1111-1111", "+1 (415) 555-2671", "415.555.2671",
        "+1234567", "+14155552671", "123-45-6789", "GB82 WEST 1234 5698 7654 32",
        "GB82WESTABCDEFGHIJK", "DE89370400440532013000", "192.168.1.20", "1.2.3.4", "10.0.0.1.5",
        "1.2.3", "2026", "3", "14", "Q2", "0", "(", ")", "+", "-", ".", " ", "\n", "\t", "\r",
        "\u{b}", "\u{c}", "\u{a0}", "\u{3000}", "号", "é", "’", "a", "Z", "_", ",",
        "2001:db8::8a2e:370:7334", "::1", ":", "fe80::1", "::ffff:10.0.0.1",
        "jane.doe@example.com", "a@x.io", "@", "%", "user+tag@sub.example.co.uk",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "eyJ",
        "sk-proj-abcdefghijklmnopqrstuvwx", "sk", "AKIAIOSFODNN7EXAMPLE", "ASIA",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "github_pat_abcdefghijklmnopqrstuv",
        "xoxb-1234567890-abcdef", "-----BEGIN RSA PRIVATE KEY-----", "MIIE",
        "-----END RSA PRIVATE KEY-----", "secret-42",
    ];

    /// Each detector finds where it looks (literals, runs around digits, colons or `@`) exactly
    /// what a search of the whole text finds, on random texts of [`FRAGMENTS`].
    #[test]
    fn narrowed_searches_find_what_searching_the_whole_text_finds() {
        let all: Vec<(&str, Action)> = BUILT_IN.iter().map(|n| (*n, Action::Mask)).collect();
        let actions = all.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect();
        let custom = [CustomDetector {
            name: "secret".to_owned(),
            regex: r"secret-\d+".to_owned(),
            action: Action::Mask,
        }];
        let detectors = Detectors::compile(&actions, &custom).unwrap();
        let mut rng = StdRng::seed_from_u64(12);
        let mut found = vec![0; detectors.detectors.len()];
        for _ in 0..5_000 {
            let text: String = (0..rng.random_range(0..24))
                .map(|_| FRAGMENTS[rng.random_range(0..FRAGMENTS.len())])
                .collect();
            let survey = detectors.survey(&text);
            for (index, detector) in detectors.detectors.iter().enumerate() {
                let windows = survey.windows(index, detector.reach);
                let narrowed: Vec<_> = find_within(&detector.regex, &text, 0, windows)
                    .map(|found| found.range())
                    .collect();
                let whole: Vec<_> = detector.regex.find_iter(&text).map(|m| m.range()).collect();
                assert_eq!(narrowed, whole, "{} in {text:?}", detector.name);
                found[index] += whole.len();
            }
        }
        // Every detector found values, so no comparison was of two empty lists only.
        for (detector, found) in detectors.detectors.iter().zip(found) {
            assert!(found > 50, "{} found {found}", detector.name);
        }
    }

    /// The runs around digits stop at a byte no value holds, count their digits, and skip
    /// digit-free stretches; a value needs as many digits as its detector's reach says.
    #[test]
    fn runs_around_digits() {
        let text = "call +1 (415) 555-2671, or Q2 2026’s line; x9y 415\u{b}555\u{c}2671\r\n";
        let runs: Vec<_> = Around::Digits
            .runs(text.as_bytes())
            .into_iter()
            .map(|run| (&text[run.range], run.digits))
            .collect();
        assert_eq!(
            runs,
            [
                (" +1 (415) 555-2671", 11),
                (" Q2 2026’", 5),
                ("9", 1),
                (" 415\u{b}555\u{c}2671\r\n", 10),
            ]
        );
    }

    #[test]
    fn every_built_in_detector_finds_its_kind() {
        let cases = [
            ("mail alice@example.com now", "mail [EMAIL_1] now"),
            ("call +1 (415) 555-2671 today", "call [PHONE_1] today"),
            ("card 4111 1111 1111 1111 ok", "card [CREDIT_CARD_1] ok"),
            ("ssn 123-45-6789 ok", "ssn [US_SSN_1] ok"),
            ("iban GB82 WEST 1234 5698 7654 32 ok", "iban [IBAN_1] ok"),
            ("host 192.168.1.20 ok", "host [IPV4_1] ok"),
            ("host 2001:db8::8a2e:370:7334 ok", "host [IPV6_1] ok"),
            (
                "t eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl x",
                "t [JWT_1] x",
            ),
            (
                "key sk-proj-abcdefghijklmnopqrstuvwx ok",
                "key [OPENAI_KEY_1] ok",
            ),
            ("aws AKIAIOSFODNN7EXAMPLE ok", "aws [AWS_ACCESS_KEY_1] ok"),
            (
                "gh ghp_abcdefghijklmnopqrstuvwxyz0123456789 ok",
                "gh [GITHUB_TOKEN_1] ok",
            ),
            (
                "slack xoxb-1234567890-abcdef ok",
                "slack [SLACK_TOKEN_1] ok",
            ),
            (
                "k -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- x",
                "k [PRIVATE_KEY_1] x",
            ),
        ];
        for (text, masked) in cases {
            assert_eq!(mask_all(text), masked, "{text}");
        }
    }

    /// Prose that does not put spaces between words (Japanese, Chinese) still has its values
    /// found: the patterns' word boundaries are ASCII ones, so a CJK character next to a number
    /// is a boundary. With Unicode boundaries, `号` and `4` are both word characters and these
    /// values went upstream unmasked.
    #[test]
    fn values_inside_cjk_prose_are_masked() {
        let cases = [
            ("電話番号+1 415-555-2671です", "電話番号[PHONE_1]です"),
            ("社会保障番号123-45-6789です", "社会保障番号[US_SSN_1]です"),
            ("卡号4111 1111 1111 1111。", "卡号[CREDIT_CARD_1]。"),
            ("键AKIAIOSFODNN7EXAMPLE。", "键[AWS_ACCESS_KEY_1]。"),
            ("主机192.168.1.20。", "主机[IPV4_1]。"),
        ];
        for (text, masked) in cases {
            assert_eq!(mask_all(text), masked, "{text}");
        }
    }

    /// A custom pattern that can match nothing (`x*`) masks only what it matches: its empty
    /// matches put no placeholder between every two characters.
    #[test]
    fn empty_matches_mask_nothing() {
        let custom = [CustomDetector {
            name: "xs".to_owned(),
            regex: "x*".to_owned(),
            action: Action::Mask,
        }];
        let detectors = Detectors::compile(&BTreeMap::new(), &custom).unwrap();
        let mut masker = Masker::default();
        assert_eq!(masker.mask(&detectors, "abc").unwrap(), "abc");
        assert_eq!(masker.mask(&detectors, "axxb").unwrap(), "a[XS_1]b");
    }

    /// Many values of detectors that interleave (each detector's pass merges into the spans
    /// already accepted) come out in order, each masked once.
    #[test]
    fn interleaved_values_of_many_detectors_are_all_masked() {
        let unit = "mail a@x.io call +1 415-555-2671 host 10.0.0.1 ";
        let text = unit.repeat(300);
        let masked = mask_all(&text);
        assert_eq!(
            masked,
            "mail [EMAIL_1] call [PHONE_1] host [IPV4_1] ".repeat(300)
        );
    }

    /// The order BUILT_IN documents: custom detectors first, then the most specific built-in
    /// one. The config's (alphabetical) order used to decide: an email detector that masks beat
    /// a custom one that rejects, and an e-mail-shaped key was masked instead of refused.
    #[test]
    fn overlaps_go_to_custom_then_the_most_specific_detector() {
        let actions = [("email", Action::Mask), ("openai_key", Action::Reject)]
            .iter()
            .map(|(n, a)| ((*n).to_owned(), *a))
            .collect();
        let custom = [CustomDetector {
            name: "staff".to_owned(),
            regex: r"[a-z]+@corp\.example".to_owned(),
            action: Action::Reject,
        }];
        let detectors = Detectors::compile(&actions, &custom).unwrap();
        let refused = |text: &str| {
            Masker::default()
                .mask(&detectors, text)
                .unwrap_err()
                .detector
        };
        assert_eq!(refused("mail jane@corp.example"), "staff");
        assert_eq!(
            refused("sk-proj-abcdefghijklmnopqrstuvwx@example.com"),
            "openai_key"
        );
        let masked = Masker::default()
            .mask(&detectors, "mail jane@example.com")
            .unwrap();
        assert_eq!(masked, "mail [EMAIL_1]");
    }

    #[test]
    fn validation_rejects_lookalikes() {
        for text in [
            "card 4111 1111 1111 1112",         // fails Luhn
            "ssn 000-12-3456",                  // area 000
            "ip 999.1.1.1",                     // octet out of range
            "iban GB00 WEST 1234 5698 7654 32", // fails mod-97
            "version 1.2.3.4.5 and 12:30",      // not addresses
        ] {
            assert_eq!(mask_all(text), text, "{text}");
        }
    }

    #[test]
    fn the_same_value_gets_the_same_placeholder_and_restores() {
        let detectors = detectors(&[("email", Action::Mask)]);
        let mut masker = Masker::default();
        let masked = masker.mask(&detectors, "a@x.io, b@y.io, a@x.io").unwrap();
        assert_eq!(masked, "[EMAIL_1], [EMAIL_2], [EMAIL_1]");
        assert_eq!(masker.restore("reply to [EMAIL_2]"), "reply to b@y.io");
        assert_eq!(masker.placeholder_holdback("see [EMA"), 4);
        assert_eq!(masker.placeholder_holdback("see [x]"), 0);
    }

    #[test]
    fn replies_mask_new_values_and_keep_the_users_own() {
        let detectors = detectors(&[("email", Action::Reject)]);
        let mut masker = Masker::default();
        let mut request = detectors.clone();
        request.detectors[0].action = Action::Mask;
        masker.mask(&request, "me: a@x.io").unwrap();
        let reply = masker.restore("[EMAIL_1] and b@y.io");
        assert_eq!(masker.mask_new(&detectors, &reply), "a@x.io and [EMAIL_2]");
        assert_eq!(
            masker.restore("[EMAIL_2]"),
            "[EMAIL_2]",
            "new placeholders stay masked"
        );
    }

    #[test]
    fn safe_cut_holds_back_what_could_still_become_a_value() {
        let all: Vec<(&str, Action)> = BUILT_IN.iter().map(|n| (*n, Action::Mask)).collect();
        let all = detectors(&all);
        for (text, sent) in [
            ("Hello wor", "Hello "),
            ("mail jane.doe@exa", "mail "),
            ("card 4111 1111 ", "card "),
            ("done. ", "done. "),
            ("k -----BEGIN KEY-----\nMII", "k "),
            ("k -----BEG", "k "),
            // Item 4 of issue 18: a phone number split at its space, an IBAN in groups.
            ("call (415) ", "call "),
            ("iban GB82", "iban "),
            ("iban GB82 WEST 1234 ", "iban "),
        ] {
            assert_eq!(&text[..all.safe_cut(text)], sent, "{text:?}");
        }
        // A JWT is held whole while it grows, far past the 256 bytes once held at most.
        let jwt = format!("t eyJhbGciOiJIUzI1NiJ9.eyJ{}", "x".repeat(600));
        assert_eq!(all.safe_cut(&jwt), 2);
        // Only the detectors configured hold: words wait for e-mail addresses, not for phones.
        let phones = detectors(&[("phone", Action::Mask)]);
        assert_eq!(phones.safe_cut("Hello wor"), "Hello wor".len());
        assert_eq!(phones.safe_cut("call +1 (415) 55"), "call ".len());
        assert_eq!(phones.max_holdback(), 32);
    }

    #[test]
    fn values_split_across_deltas_are_restored_and_masked_whole() {
        let config = GuardConfig {
            reversible: true,
            responses: true,
            ..emails(Action::Mask)
        };
        let detectors = Detectors::compile(&config.detectors, &[]).unwrap();
        let mut masker = Masker::default();
        masker.mask(&detectors, "a@x.io").unwrap();
        let mut guard = DeltaGuard::default();
        let pieces = ["Write to [EMA", "IL_1] and z@", "y.io", " now"];
        let mut out = String::new();
        for (i, piece) in pieces.iter().enumerate() {
            let finish = if i + 1 == pieces.len() {
                serde_json::json!("stop")
            } else {
                Value::Null
            };
            let mut event = serde_json::json!({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}]});
            guard.guard_event(&mut event, &config, &detectors, &mut masker);
            out.push_str(event["choices"][0]["delta"]["content"].as_str().unwrap());
        }
        assert_eq!(out, "Write to a@x.io and [EMAIL_2] now");
    }

    #[test]
    fn field_rules_guard_whole_values_by_pointer() {
        let config = GuardConfig {
            fields: vec![
                FieldRule {
                    pointer: "/user".into(),
                    name: "user_id".into(),
                    action: Action::Mask,
                },
                FieldRule {
                    pointer: "/metadata/ssn~1tax".into(),
                    name: "tax_id".into(),
                    action: Action::Mask,
                },
            ],
            ..GuardConfig::default()
        };
        let body =
            serde_json::json!({"user": "u-42", "metadata": {"ssn/tax": 12345}, "messages": []});
        let (outcome, out, masker) = guard(config, body);
        assert!(outcome.unwrap());
        assert_eq!(out["user"], "[USER_ID_1]");
        assert_eq!(out["metadata"]["ssn/tax"], "[TAX_ID_1]");
        assert_eq!(masker.restore("[USER_ID_1]"), "u-42");
        let reject = GuardConfig {
            fields: vec![FieldRule {
                pointer: "/user".into(),
                name: "user_id".into(),
                action: Action::Reject,
            }],
            ..GuardConfig::default()
        };
        let (outcome, _, _) = guard(reject, serde_json::json!({"user": "x"}));
        assert_eq!(outcome.unwrap_err().detector, "user_id");
        assert!(
            GuardConfig {
                fields: vec![FieldRule {
                    pointer: "user".into(),
                    name: "x".into(),
                    action: Action::Mask
                }],
                ..GuardConfig::default()
            }
            .validate_fields()
            .is_err()
        );
    }

    #[test]
    fn stream_events_of_every_api_are_guarded() {
        let config = GuardConfig {
            reversible: true,
            ..emails(Action::Mask)
        };
        let detectors = Detectors::compile(&config.detectors, &[]).unwrap();
        let mut masker = Masker::default();
        masker.mask(&detectors, "a@x.io").unwrap();
        for (mut event, path) in [
            (
                serde_json::json!({"type": "response.output_text.delta", "delta": "[EMAIL_1]"}),
                "/delta",
            ),
            (
                serde_json::json!({"type": "response.output_text.done", "text": "[EMAIL_1]"}),
                "/text",
            ),
            (
                serde_json::json!({"response": {"output": [{"content": [{"text": "[EMAIL_1]"}]}]}}),
                "/response/output/0/content/0/text",
            ),
            (
                serde_json::json!({"item": {"content": [{"text": "[EMAIL_1]"}]}}),
                "/item/content/0/text",
            ),
            (
                serde_json::json!({"delta": {"type": "text_delta", "text": "[EMAIL_1]"}}),
                "/delta/text",
            ),
        ] {
            guard_reply(&mut event, &config, &detectors, &mut masker);
            assert_eq!(event.pointer(path).unwrap(), "a@x.io", "{event}");
        }
    }

    #[test]
    fn reject_and_monitor() {
        let detectors = detectors(&[("credit_card", Action::Reject), ("email", Action::Monitor)]);
        let mut masker = Masker::default();
        assert_eq!(masker.mask(&detectors, "a@x.io").unwrap(), "a@x.io");
        let rejected = masker.mask(&detectors, "4111111111111111").unwrap_err();
        assert_eq!(rejected.detector, "credit_card");
        assert_eq!(masker.detections.len(), 2);
    }

    #[test]
    fn texts_left_as_they_were_come_back_borrowed() {
        let detectors = detectors(&[("email", Action::Monitor), ("phone", Action::Mask)]);
        let mut masker = Masker::default();
        for text in ["nothing sensitive here", "only a monitored a@x.io"] {
            assert!(matches!(
                masker.mask(&detectors, text),
                Ok(Cow::Borrowed(_))
            ));
        }
        let masked = masker
            .mask(&detectors, "call 415-555-2671, a@x.io")
            .unwrap();
        assert_eq!(masked, "call [PHONE_1], a@x.io");
    }

    #[test]
    fn overlapping_matches_go_to_the_detector_listed_first() {
        let custom = |name: &str, regex: &str| CustomDetector {
            name: name.into(),
            regex: regex.into(),
            action: Action::Mask,
        };
        let actions = BTreeMap::from([("us_ssn".to_owned(), Action::Mask)]);
        let customs = [
            custom("digits", r"\d{3}-\d{2}-\d{4}"),
            custom("tail", r"\d{4} and \d{3}"),
        ];
        let detectors = Detectors::compile(&actions, &customs).unwrap();
        // Custom detectors come first, in config order: `digits` claims both values, so `tail`
        // and the built-in SSN, which overlap them, are dropped.
        let masked = Masker::default()
            .mask(&detectors, "123-45-6789 and 999-99-9999")
            .unwrap();
        assert_eq!(masked, "[DIGITS_1] and [DIGITS_2]");
    }

    #[test]
    fn custom_detectors_and_bad_names() {
        let custom = [CustomDetector {
            name: "employee_id".into(),
            regex: r"EMP-\d{6}".into(),
            action: Action::Mask,
        }];
        let detectors = Detectors::compile(&BTreeMap::new(), &custom).unwrap();
        assert_eq!(
            Masker::default().mask(&detectors, "id EMP-123456").unwrap(),
            "id [EMPLOYEE_ID_1]"
        );
        let bad = BTreeMap::from([("passport".to_owned(), Action::Mask)]);
        assert_eq!(
            Detectors::compile(&bad, &[]).unwrap_err().field,
            "guard.detectors.passport"
        );
        let bad_regex = [CustomDetector {
            name: "x".into(),
            regex: "(".into(),
            action: Action::Mask,
        }];
        assert_eq!(
            Detectors::compile(&BTreeMap::new(), &bad_regex)
                .unwrap_err()
                .field,
            "guard.custom[0].regex"
        );
    }

    fn guard(config: GuardConfig, body: Value) -> (Result<bool, Rejected>, Value, Masker) {
        let detectors = Detectors::compile(&config.detectors, &config.custom).unwrap();
        let Value::Object(mut body) = body else {
            panic!()
        };
        let mut masker = Masker::default();
        let outcome = guard_request(&mut body, &config, &detectors, &mut masker);
        (outcome, Value::Object(body), masker)
    }

    fn emails(action: Action) -> GuardConfig {
        GuardConfig {
            detectors: BTreeMap::from([("email".to_owned(), action)]),
            ..GuardConfig::default()
        }
    }

    #[test]
    fn requests_are_masked_in_every_place_text_goes() {
        let body = serde_json::json!({
            "system": "ops a@x.io", "instructions": "b@x.io", "prompt": ["c@x.io"],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "d@x.io"},
                                             {"type": "tool_result", "content": "e@x.io"}]},
                {"role": "assistant", "tool_calls": [{"function": {"arguments": "{\"to\":\"f@x.io\"}"}}]}],
            "input": [{"type": "function_call_output", "output": "g@x.io"}]});
        let (outcome, out, masker) = guard(emails(Action::Mask), body);
        assert!(outcome.unwrap());
        assert_eq!(out["system"], "ops [EMAIL_1]");
        assert_eq!(out["messages"][0]["content"][1]["content"], "[EMAIL_5]");
        let arguments = out["messages"][1]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(arguments).unwrap(),
            serde_json::json!({"to": "[EMAIL_6]"})
        );
        assert_eq!(out["input"][0]["output"], "[EMAIL_7]");
        assert_eq!(masker.restore("[EMAIL_6]"), "f@x.io");
    }

    #[test]
    fn roles_out_of_scope_are_left_alone_and_reject_names_the_detector() {
        let config = GuardConfig {
            roles: vec!["user".into()],
            ..emails(Action::Mask)
        };
        let body = serde_json::json!({"messages": [{"role": "system", "content": "a@x.io"},
                                                   {"role": "user", "content": "b@x.io"}]});
        let (_, out, _) = guard(config, body);
        assert_eq!(out["messages"][0]["content"], "a@x.io");
        assert_eq!(out["messages"][1]["content"], "[EMAIL_1]");
        let (outcome, _, _) = guard(
            emails(Action::Reject),
            serde_json::json!({"messages": [{"role": "user", "content": "a@x.io"}]}),
        );
        assert_eq!(outcome.unwrap_err().detector, "email");
    }

    #[test]
    fn replies_are_restored_and_new_values_masked() {
        let config = GuardConfig {
            reversible: true,
            responses: true,
            ..emails(Action::Mask)
        };
        let (_, _, mut masker) = guard(
            config.clone(),
            serde_json::json!({"messages": [{"role": "user", "content": "a@x.io"}]}),
        );
        let detectors = Detectors::compile(&config.detectors, &[]).unwrap();
        let mut reply = serde_json::json!({"choices": [{"message": {"content": "[EMAIL_1] or z@y.io"}}],
                                           "content": [{"type": "text", "text": "[EMAIL_1]"}]});
        assert!(guard_reply(&mut reply, &config, &detectors, &mut masker));
        assert_eq!(
            reply["choices"][0]["message"]["content"],
            "a@x.io or [EMAIL_2]"
        );
        assert_eq!(reply["content"][0]["text"], "a@x.io");
        let plain = serde_json::json!({"choices": [{"message": {"content": "Nothing to see."}}]});
        let mut reply = plain.clone();
        assert!(!guard_reply(&mut reply, &config, &detectors, &mut masker));
        assert_eq!(reply, plain);
    }

    /// Item 6 of issue 18: fullwidth digits matched Unicode `\d`, and the IBAN check sliced the
    /// match inside a character: a panic whose message held the text. ASCII digits only now, and
    /// no text of any characters panics.
    #[test]
    fn fullwidth_digits_are_not_digits_and_never_panic() {
        for text in [
            "GB３３12345678901",
            "GB82１２３４5698765432",
            "card ４１１１ １１１１ １１１１ １１１１",
            "ssn １２３-４５-６７８９, call ４１５-５５５-２６７１",
            "ip １９２.１６８.１.２０",
        ] {
            assert_eq!(mask_all(text), text, "{text}");
        }
        let mut rng = StdRng::seed_from_u64(6);
        let pieces = [
            "GB", "３", "1", "٣", " ", "A", "-", "(", "+", "é", "Ⅻ", "𝟘", ".",
        ];
        for _ in 0..3_000 {
            let text: String = (0..rng.random_range(0..30))
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            mask_all(&text);
        }
    }

    /// Item 5 of issue 18: the request fields that went upstream unscanned.
    #[test]
    fn every_request_field_that_holds_text_is_guarded() {
        let body = serde_json::json!({
            "input": ["a@x.io", [1, 2, 3], 7, "plain"],
            "prompt": {"id": "p", "variables": {"who": "b@x.io",
                                                "doc": {"type": "input_text", "text": "c@x.io"},
                                                "pic": {"type": "input_image", "image_url": "d@x.io"}}},
            "prediction": {"type": "content", "content": [{"type": "text", "text": "e@x.io"}]},
            "messages": [
                {"role": "function", "name": "lookup", "content": "f@x.io"},
                {"role": "user", "name": "g@x.io", "content": [
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                    "data": "h@x.io"}},
                    {"type": "document", "source": {"type": "content",
                                                    "content": [{"type": "text", "text": "i@x.io"}]}}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t", "name": "send",
                     "input": {"to": ["j@x.io"], "n": 1}}]}]});
        let (outcome, out, _) = guard(emails(Action::Mask), body);
        assert!(outcome.unwrap());
        let text = out.to_string();
        for (n, letter) in "abcdefghij".chars().enumerate() {
            assert!(
                !text.contains(&format!("{letter}@x.io")),
                "{letter}: {text}"
            );
            assert!(text.contains(&format!("[EMAIL_{}]", n + 1)), "{n}: {text}");
        }
        assert_eq!(
            out["input"][1],
            serde_json::json!([1, 2, 3]),
            "token ids stay"
        );
        assert_eq!(out["messages"][0]["name"], "lookup");
        // `function` messages are `tool` ones for scoping; tool_use inputs follow tool_arguments.
        let scoped = GuardConfig {
            roles: vec!["user".into()],
            tool_arguments: false,
            ..emails(Action::Mask)
        };
        let body = serde_json::json!({"messages": [
            {"role": "function", "name": "f", "content": "a@x.io"},
            {"role": "assistant", "content": [{"type": "tool_use", "input": {"to": "b@x.io"}}]}]});
        let (outcome, _, _) = guard(scoped, body);
        assert!(!outcome.unwrap());
    }

    /// Every field the model reads, in every request shape; `@@` is where a value is planted,
    /// `@ARG@` tool-call arguments (a JSON string) holding it, `@B64@` base64 text holding it,
    /// and `%role%` a spelling of a role (any case, or one llm-edge does not know).
    #[rustfmt::skip]
    const READ_FIELDS: &[&str] = &[
        // Chat.
        r#"{"messages":[{"role":"%role%","content":"@@"}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"text","text":"@@"}]}]}"#,
        r#"{"messages":[{"role":"%role%","name":"@@","content":"hi"}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"image_url","image_url":{"url":"https://x.test/?q=@@","detail":"low"}}]}]}"#,
        r#"{"messages":[{"role":"assistant","content":[{"type":"refusal","refusal":"@@"}]}]}"#,
        r#"{"messages":[{"role":"assistant","content":null,"reasoning_content":"@@"}]}"#,
        r#"{"messages":[{"role":"assistant","function_call":{"name":"f","arguments":"@ARG@"}}]}"#,
        r#"{"messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"@ARG@"}}]}]}"#,
        r#"{"messages":[{"role":"tool","tool_call_id":"c","content":"@@"}]}"#,
        r#"{"messages":[{"role":"function","name":"f","content":"@@"}]}"#,
        r#"{"messages":[{"role":"developer","content":"@@"}]}"#,
        r#"{"messages":[{"role":"system","content":[{"type":"text","text":"@@"}]}]}"#,
        r#"{"messages":[],"tools":[{"type":"function","function":{"name":"f","description":"@@"}}]}"#,
        r#"{"messages":[],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"to":{"type":"string","description":"@@"}}}}}]}"#,
        r#"{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"s","description":"@@","schema":{}}}}"#,
        r#"{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"$defs":{"a":{"description":"@@"}}}}}}"#,
        r#"{"messages":[],"stop":"@@"}"#,
        r#"{"messages":[],"stop":["END","@@"]}"#,
        r#"{"messages":[],"metadata":{"id":"@@"}}"#,
        r#"{"messages":[],"user":"@@"}"#,
        r#"{"messages":[],"prediction":{"type":"content","content":"@@"}}"#,
        // Legacy completions and embeddings.
        r#"{"prompt":"@@"}"#,
        r#"{"prompt":["x","@@"]}"#,
        r#"{"prompt":"x","suffix":"@@"}"#,
        r#"{"input":"@@"}"#,
        r#"{"input":[["x","@@"]]}"#,
        // Responses.
        r#"{"input":[{"role":"%role%","content":[{"type":"input_text","text":"@@"}]}]}"#,
        r#"{"input":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"@@","annotations":[]}]}]}"#,
        r#"{"input":[{"type":"reasoning","id":"r","summary":[{"type":"summary_text","text":"@@"}]}]}"#,
        r#"{"input":[{"type":"function_call","call_id":"c","name":"f","arguments":"@ARG@"}]}"#,
        r#"{"input":[{"type":"function_call_output","call_id":"c","output":"@@"}]}"#,
        r#"{"input":[{"type":"custom_tool_call","call_id":"c","name":"t","input":"@@"}]}"#,
        r#"{"input":[{"type":"computer_call_output","call_id":"c","output":{"type":"computer_screenshot","image_url":"https://x.test/@@"}}]}"#,
        r#"{"input":[{"role":"user","content":[{"type":"input_image","image_url":"https://x.test/@@"}]}]}"#,
        r#"{"input":[{"role":"user","content":[{"type":"input_file","filename":"@@","file_data":"data:application/pdf;base64,JVBERi0="}]}]}"#,
        r#"{"input":[{"role":"user","content":[{"type":"input_file","file_data":"data:text/plain;base64,@B64@"}]}]}"#,
        r#"{"input":[],"instructions":"@@"}"#,
        r#"{"input":[],"instructions":[{"role":"developer","content":"@@"}]}"#,
        r#"{"input":[],"tools":[{"type":"function","name":"f","description":"@@","parameters":{}}]}"#,
        r#"{"input":[],"text":{"format":{"type":"json_schema","name":"s","schema":{"type":"object","properties":{"a":{"type":"string","description":"@@"}}}}}}"#,
        r#"{"prompt":{"id":"p","variables":{"who":"@@"}}}"#,
        r#"{"prompt":{"id":"p","variables":{"doc":{"type":"input_text","text":"@@"}}}}"#,
        // Anthropic Messages.
        r#"{"system":"@@","messages":[]}"#,
        r#"{"system":[{"type":"text","text":"@@","cache_control":{"type":"ephemeral"}}],"messages":[]}"#,
        r#"{"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"@@","signature":"s"}]}]}"#,
        r#"{"messages":[{"role":"assistant","content":[{"type":"text","text":"x","citations":[{"type":"char_location","cited_text":"@@"}]}]}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"search_result","source":"@@","title":"t","content":[]}]}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"search_result","source":"s","title":"@@","content":[{"type":"text","text":"x"}]}]}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"image","source":{"type":"url","url":"https://x.test/@@"}}]}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"document","source":{"type":"base64","media_type":"text/plain","data":"@B64@"}}]}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"@@"}}]}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"@@"}]}]}]}"#,
        r#"{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"send","input":{"to":["@@"]}}]}]}"#,
        r#"{"messages":[],"tools":[{"name":"f","description":"@@","input_schema":{"type":"object"}}]}"#,
        r#"{"messages":[],"tools":[{"name":"f","input_schema":{"type":"object","properties":{"to":{"type":"string","description":"@@"}}}}]}"#,
        r#"{"messages":[],"metadata":{"user_id":"@@"}}"#,
    ];

    /// Values of several detectors, and the texts they can be planted in.
    const PLANTED: [&str; 6] = [
        "jane.doe@example.com",
        "+1 (415) 555-2671",
        "GB82 WEST 1234 5698 7654 32",
        "sk-proj-abcdefghijklmnopqrstuvwx",
        "4111 1111 1111 1111",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    ];

    /// Every string a body holds, with what base64 strings and data URLs decode to.
    fn readable(value: &Value, out: &mut String) {
        use base64::Engine as _;
        match value {
            Value::String(text) => {
                out.push_str(text);
                out.push('\n');
                let payload = base64_data_url(text).map_or(text.as_str(), |(_, p)| p);
                if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(payload) {
                    out.push_str(&String::from_utf8_lossy(&decoded));
                    out.push('\n');
                }
            }
            Value::Array(items) => items.iter().for_each(|item| readable(item, out)),
            Value::Object(fields) => fields.values().for_each(|field| readable(field, out)),
            _ => {}
        }
    }

    fn every_argument_is_json(value: &Value) -> bool {
        match value {
            Value::Array(items) => items.iter().all(every_argument_is_json),
            Value::Object(fields) => fields.iter().all(|(key, field)| match field {
                Value::String(text) if key == "arguments" => {
                    serde_json::from_str::<Value>(text).is_ok()
                }
                other => every_argument_is_json(other),
            }),
            _ => true,
        }
    }

    /// A value planted in any field the model reads, of any request shape, in prose, under any
    /// spelling of its role, never reaches the guarded body with `mask`, and refuses the
    /// request with `reject`; tool-call arguments stay valid JSON.
    #[test]
    fn a_value_planted_in_any_field_the_model_reads_never_reaches_the_provider() {
        use base64::Engine as _;
        let roles = [
            "user",
            "User",
            "USER",
            "human",
            "Human",
            "bot",
            "uSeR",
            "Assistant",
        ];
        let before = ["", "mail ", "é 号 ", "to: ", "\n"];
        let after = ["", " now", " 号", ".", "\n"];
        let mut rng = StdRng::seed_from_u64(4);
        for action in [Action::Mask, Action::Reject] {
            let config = GuardConfig {
                detectors: BUILT_IN.iter().map(|n| ((*n).to_owned(), action)).collect(),
                ..GuardConfig::default()
            };
            for case in READ_FIELDS {
                for _ in 0..12 {
                    let value = PLANTED[rng.random_range(0..PLANTED.len())];
                    let text = format!(
                        "{}{value}{}",
                        before[rng.random_range(0..before.len())],
                        after[rng.random_range(0..after.len())]
                    );
                    let arguments = serde_json::json!({"to": text, "n": 1}).to_string();
                    let json_str = |s: &str| serde_json::to_string(s).unwrap();
                    let body = case
                        .replace("%role%", roles[rng.random_range(0..roles.len())])
                        .replace("\"@ARG@\"", &json_str(&arguments))
                        .replace(
                            "@B64@",
                            &base64::engine::general_purpose::STANDARD.encode(&text),
                        )
                        .replace("\"@@\"", &json_str(&text))
                        .replace("@@", json_str(&text).trim_matches('"'));
                    let body: Value = serde_json::from_str(&body).unwrap();
                    let mut planted = String::new();
                    readable(&body, &mut planted);
                    assert!(planted.contains(value), "{case}: planted");
                    let (outcome, out, _) = guard(config.clone(), body);
                    if action == Action::Reject {
                        assert!(outcome.is_err(), "{case}: {text:?}");
                        continue;
                    }
                    assert!(outcome.unwrap(), "{case}: {text:?}");
                    let mut after = String::new();
                    readable(&out, &mut after);
                    assert!(!after.contains(value), "{case}: {text:?} in {out}");
                    assert!(every_argument_is_json(&out), "{case}: {out}");
                }
            }
        }
    }

    /// Identifiers, enums and opaque tokens are never masked (each structural key, tool names,
    /// schema enums, defaults and property names), but a message's author `name` is.
    #[test]
    fn structural_keys_and_schema_contracts_are_left_alone() {
        for key in STRUCTURAL_KEYS {
            let body = serde_json::json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi"}, {key: "a@x.io"}, {key: {"type": "a@x.io"}}]}]});
            let (outcome, out, _) = guard(emails(Action::Mask), body.clone());
            assert!(!outcome.unwrap(), "{key}");
            assert_eq!(out, body, "{key}");
        }
        let body = serde_json::json!({
            "messages": [{"role": "assistant", "content": [
                {"type": "tool_use", "id": "a@x.io", "name": "a@x.io", "input": {}},
                {"type": "thinking", "thinking": "ok", "signature": "a@x.io"}]}],
            "tools": [{"type": "function", "function": {"name": "a@x.io", "parameters": {
                "type": "object", "required": ["a@x.io"],
                "properties": {"a@x.io": {"type": "string", "enum": ["a@x.io"],
                                          "default": "a@x.io", "examples": ["a@x.io"]},
                               "enum": {"type": "string", "description": "b@x.io"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "a@x.io"}}});
        let (outcome, out, _) = guard(emails(Action::Mask), body.clone());
        assert!(outcome.unwrap());
        let mut expected = body;
        expected["tools"][0]["function"]["parameters"]["properties"]["enum"]["description"] =
            "[EMAIL_1]".into();
        assert_eq!(out, expected);
        let (_, out, _) = guard(
            emails(Action::Mask),
            serde_json::json!({"messages": [{"role": "user", "name": "a@x.io", "content": "hi"}]}),
        );
        assert_eq!(out["messages"][0]["name"], "[EMAIL_1]");
    }

    /// Finding 3 of the review: roles are compared without case, and a role llm-edge does not
    /// know is scanned whatever `roles` says; known roles out of `roles` are still left alone.
    #[test]
    fn unknown_roles_are_scanned_and_roles_compare_without_case() {
        let config = GuardConfig {
            roles: vec!["user".into()],
            ..emails(Action::Mask)
        };
        for role in [
            "human",
            "User",
            "USER",
            "xyz",
            "",
            "Function_x",
            "usér",
            "user ",
        ] {
            let body = serde_json::json!({"messages": [{"role": role, "content": "a@x.io"}]});
            let (_, out, _) = guard(config.clone(), body);
            assert_eq!(out["messages"][0]["content"], "[EMAIL_1]", "{role:?}");
        }
        let body = serde_json::json!({"messages": [{"role": 7, "content": "a@x.io"}]});
        assert!(guard(config.clone(), body).0.unwrap());
        for role in ["System", "ASSISTANT", "developer", "Tool", "FUNCTION"] {
            let body = serde_json::json!({"messages": [{"role": role, "content": "a@x.io"}]});
            let (outcome, _, _) = guard(config.clone(), body);
            assert!(!outcome.unwrap(), "{role:?}");
        }
        let scoped = GuardConfig {
            roles: vec!["System".into()],
            ..emails(Action::Mask)
        };
        let body = serde_json::json!({"system": "a@x.io", "tools": [{"name": "f", "description": "b@x.io"}],
                                      "messages": [{"role": "user", "content": "c@x.io"}],
                                      "metadata": {"user_id": "d@x.io"}, "stop": ["e@x.io"]});
        let (_, out, _) = guard(scoped, body);
        assert_eq!(out["system"], "[EMAIL_1]");
        assert_eq!(out["tools"][0]["description"], "[EMAIL_2]");
        assert_eq!(out["messages"][0]["content"], "c@x.io");
        assert_eq!(out["metadata"]["user_id"], "[EMAIL_3]", "always scanned");
        assert_eq!(out["stop"][0], "e@x.io", "the user's");
    }

    /// Finding 10 of the review: a value in `model` refuses the request whatever the detector's
    /// action, and is counted as refused.
    #[test]
    fn a_value_in_the_model_refuses_the_request() {
        for action in [Action::Mask, Action::Reject, Action::Monitor] {
            let body = serde_json::json!({"model": "ft:jane.doe@example.com", "messages": []});
            let (outcome, out, masker) = guard(emails(action), body.clone());
            assert_eq!(outcome.unwrap_err().detector, "email");
            assert_eq!(out, body);
            assert_eq!(masker.detections[0].action, Action::Reject);
        }
        let body = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "a@x.io"}]});
        assert!(guard(emails(Action::Mask), body).0.unwrap());
    }

    /// Base64 documents: text is guarded decoded and encoded again; binary is left alone; what
    /// is not base64 is guarded as text.
    #[test]
    fn base64_text_documents_are_decoded_guarded_and_encoded_again() {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        let document = |media_type: &str, data: &str| {
            serde_json::json!({"messages": [{"role": "user", "content": [{"type": "document",
                "source": {"type": "base64", "media_type": media_type, "data": data}}]}]})
        };
        let (_, out, masker) = guard(
            emails(Action::Mask),
            document("text/plain", &engine.encode("mail a@x.io now")),
        );
        let data = out["messages"][0]["content"][0]["source"]["data"]
            .as_str()
            .unwrap();
        assert_eq!(engine.decode(data).unwrap(), b"mail [EMAIL_1] now");
        assert_eq!(masker.restore("[EMAIL_1]"), "a@x.io");
        let pdf = document("application/pdf", &engine.encode("%PDF a@x.io"));
        assert_eq!(guard(emails(Action::Mask), pdf.clone()).1, pdf);
        let (_, out, _) = guard(emails(Action::Mask), document("text/plain", "a@x.io"));
        assert_eq!(
            out["messages"][0]["content"][0]["source"]["data"],
            "[EMAIL_1]"
        );
        let clean = document("text/plain", &engine.encode("nothing here"));
        assert_eq!(guard(emails(Action::Mask), clean.clone()).1, clean);
    }

    /// Finding 2: with `responses`, a value in any string of a reply or stream event that is not
    /// an identifier (logprobs, audio transcripts, annotations and citations, legacy
    /// `function_call` arguments, MCP output, error messages, fields no API has yet) never
    /// comes out; identifiers stay as they were, arguments stay valid JSON, logprobs go.
    #[test]
    fn every_reply_string_is_guarded() {
        use serde_json::json;
        const V: &str = "jane.doe@example.com";
        let detectors = detectors(&[("email", Action::Mask)]);
        let config = GuardConfig {
            responses: true,
            ..GuardConfig::default()
        };
        let args = json!({"to": V, "list": [V, {"id": V}]}).to_string();
        let fixed = [
            json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": [{
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "ok", "audio": {"transcript": V},
                    "annotations": [{"type": "url_citation", "url_citation": {"url": V, "title": V}}],
                    "function_call": {"name": "f", "arguments": args},
                    "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "lookup", "arguments": args}}]},
                "logprobs": {"content": [{"token": V, "bytes": [106], "top_logprobs": [{"token": V}]}]}}]}),
            json!({"error": {"message": format!("user {V} not allowed"), "type": "invalid_request_error"}}),
            json!({"output": [{"type": "message", "id": "msg_1", "content": [{"type": "output_text",
                "text": "ok", "annotations": [{"type": "url_citation", "url": V, "title": V}],
                "logprobs": [{"token": V}]}]},
                {"type": "mcp_call", "name": "m", "arguments": "{}", "output": V}]}),
            json!({"content": [{"type": "text", "text": "ok",
                "citations": [{"type": "char_location", "cited_text": V}]},
                {"type": "web_search_tool_result", "content": [{"url": V, "title": V}]}]}),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": V}}),
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "citations_delta", "citation": {"cited_text": V}}}),
            json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
                "delta": "ok", "logprobs": [{"token": V, "top_logprobs": [{"token": V}]}]}),
            json!({"type": "response.output_text.annotation.added", "annotation": {"url": V}}),
            json!({"choices": [{"index": 0, "delta": {"content": "ok", "audio": {"transcript": V}},
                "logprobs": {"content": [{"token": V}]}}]}),
        ];
        // And replies of random shape: the value anywhere but under an identifier's key.
        let mut rng = StdRng::seed_from_u64(2);
        const KEYS: [&str; 12] = [
            "content",
            "text",
            "message",
            "x",
            "items",
            "url",
            "id",
            "type",
            "name",
            "arguments",
            "input",
            "logprobs",
        ];
        fn random(rng: &mut StdRng, depth: u32, key: &str) -> Value {
            let identifier = STRUCTURAL.contains(&key) || key == "name";
            if identifier {
                return json!("ident_1");
            }
            match rng.random_range(0..if depth > 3 { 2 } else { 5 }) {
                0 => json!(format!("mail {V}.")),
                1 if key == "arguments" => json!(json!({"a": V}).to_string()),
                1 => json!(rng.random_range(0..9)),
                2 => Value::Array((0..3).map(|_| random(rng, depth + 1, "")).collect()),
                _ => {
                    let mut object = Map::new();
                    for _ in 0..rng.random_range(1..5) {
                        let key = KEYS[rng.random_range(0..KEYS.len())];
                        object.insert(key.to_owned(), random(rng, depth + 1, key));
                    }
                    Value::Object(object)
                }
            }
        }
        let replies = fixed
            .into_iter()
            .chain((0..300).map(|_| random(&mut rng, 0, "")));
        let mut checked = 0;
        for reply in replies {
            let mut whole = reply.clone();
            let mut masker = Masker::default();
            guard_reply(&mut whole, &config, &detectors, &mut masker);
            let mut guard = DeltaGuard::default();
            let mut streamed = reply.clone();
            let mut out = guard.guard_event(&mut streamed, &config, &detectors, &mut masker);
            out.push(streamed);
            out.extend(guard.finish(&config, &detectors, &mut masker));
            out.push(whole.clone());
            for event in &out {
                let sent = event.to_string();
                assert!(!sent.contains(V), "{reply} -> {sent}");
                check_left(event);
            }
            if reply.to_string().contains(V) {
                checked += 1;
            }
            // Identifiers are left alone.
            assert_eq!(whole.get("id"), reply.get("id"));
            assert_eq!(whole.get("type"), reply.get("type"));
        }
        assert!(checked > 200, "{checked}");

        /// Logprobs are gone and JSON arguments are still JSON.
        fn check_left(value: &Value) {
            match value {
                Value::Array(items) => items.iter().for_each(check_left),
                Value::Object(fields) => {
                    for (key, field) in fields {
                        match (key.as_str(), field) {
                            ("logprobs", Value::Array(items)) => assert!(items.is_empty()),
                            ("logprobs", field) => assert!(field.is_null(), "{field}"),
                            ("arguments", Value::String(text)) if text.starts_with('{') => {
                                serde_json::from_str::<Value>(text).expect("JSON arguments");
                            }
                            // Tool input is data: a `logprobs` in it is the model's.
                            ("input", _) => {}
                            _ => check_left(field),
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
