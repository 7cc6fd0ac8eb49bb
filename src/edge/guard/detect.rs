//! The compiled detectors of a config and how they find values: each detector looks only where
//! its values can be (see [`Reach`]), and where matches overlap the detector listed first wins.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::ops::Range;

use aho_corasick::{AhoCorasick, Input, MatchKind};
use regex::{Match, Regex, RegexBuilder, RegexSet, RegexSetBuilder, SetMatches};

use crate::config_error::{ConfigError, REGEX_SIZE_LIMIT, check_label_name};

use super::config::{Action, CustomDetector};
use super::hold::{
    CUSTOM_HOLD, Hold, ascii_digit, ascii_upper, aws_char, card_char, email_char, github_char,
    iban_char, ipv4_char, ipv6_char, jwt_char, key_char, number_start, phone_char, slack_char,
    ssn_char,
};
use super::validators::{
    Validator, always, valid_card, valid_iban, valid_ipv4, valid_ipv6, valid_phone, valid_ssn,
};

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
pub(super) struct Detector {
    /// The name in config, stats and errors.
    pub(super) name: String,
    /// The name in placeholders: `EMAIL` of `[EMAIL_1]`.
    pub(super) placeholder_prefix: String,
    regex: Regex,
    validate: Validator,
    /// What a value it finds in a request gets.
    pub(super) action: Action,
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
    /// The custom detectors' patterns, in sets, in `detectors` order: one pass over a text a set
    /// tells which of them can match it, however many there are. One set a config: a route
    /// that extends a listener's guard adds its set to the listener's, compiled already.
    custom: Vec<RegexSet>,
    /// The literals of the detectors of [`Reach::Literals`], found in one vectorised pass
    /// (leftmost-first: overlapping ones are found by searching again from the next byte).
    literals: Option<AhoCorasick>,
    /// Which detector (its index in `detectors`) each literal, by pattern id, belongs to.
    literal_owners: Vec<usize>,
}

/// What [`Detectors::spans`] learns of one text, once for all detectors: where each looks.
struct Survey<'t> {
    text: &'t str,
    /// The custom detectors whose pattern matches somewhere in the text, a set each.
    custom: Vec<SetMatches>,
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
pub(super) struct Span<'d> {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) detector: &'d Detector,
}

impl Detectors {
    /// Compiles the built-in detectors named in `actions` and the custom ones. Errors name the
    /// unknown detector, the bad regex or the bad name under `guard.`.
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
            if let (Some(&action), Some((pattern, validate, reach, hold))) =
                (actions.get(name), built_in(name))
            {
                let regex = Regex::new(pattern).expect("built-in patterns compile");
                detectors.push(Detector::new(name, regex, validate, action, (reach, hold)));
            }
        }
        let sets = if custom.is_empty() {
            Vec::new()
        } else {
            let set = RegexSetBuilder::new(custom.iter().map(|d| d.regex.as_str()))
                .size_limit(REGEX_SIZE_LIMIT * custom.len())
                .build()
                .map_err(|e| {
                    ConfigError::new(
                        "guard.custom",
                        format!("the detectors together are too large: {e}"),
                    )
                })?;
            vec![set]
        };
        Ok(Self::assemble(detectors, sets))
    }

    /// These detectors with a route's added, as [`Detectors::compile`] would compile the two
    /// configs' merged: the custom ones first (these, then the route's), then the built-in ones
    /// of either in [`BUILT_IN`]'s order, with the route's action where both name one. Compiles
    /// no pattern, so it cannot fail.
    pub(super) fn extended(&self, route: &Detectors) -> Detectors {
        let (own_custom, own_built_in) = self.detectors.split_at(self.custom_count());
        let (route_custom, route_built_in) = route.detectors.split_at(route.custom_count());
        let mut detectors: Vec<Detector> = own_custom.iter().chain(route_custom).cloned().collect();
        for name in BUILT_IN {
            let named = |detectors: &[Detector]| detectors.iter().find(|d| d.name == name).cloned();
            if let Some(detector) = named(route_built_in).or_else(|| named(own_built_in)) {
                detectors.push(detector);
            }
        }
        let sets = self.custom.iter().chain(&route.custom).cloned().collect();
        Self::assemble(detectors, sets)
    }

    /// How many custom detectors there are: the first ones of `detectors`.
    fn custom_count(&self) -> usize {
        self.custom.iter().map(RegexSet::len).sum()
    }

    /// The detectors, custom ones first and matched by `custom`, with their literals gathered.
    fn assemble(detectors: Vec<Detector>, custom: Vec<RegexSet>) -> Self {
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
        Self {
            detectors,
            custom,
            literals,
            literal_owners,
        }
    }

    /// Whether no detector is configured.
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// The values in `text` that a detector accepts, in order: where matches overlap, the one
    /// of the detector listed first.
    pub(super) fn spans(&self, text: &str) -> Vec<Span<'_>> {
        self.spans_from(text, 0)
    }

    /// [`Detectors::spans`] of the values that start at or after `from`, as a search of `text`
    /// from there finds them: `text[..from]` is only the left context a word boundary or an
    /// anchor at `from` is judged by (text of a stream already sent).
    pub(super) fn spans_from(&self, text: &str, from: usize) -> Vec<Span<'_>> {
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

    /// One pass over `text` for each set of custom detectors and one for the literals.
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
            custom: self.custom.iter().map(|set| set.matches(text)).collect(),
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
            Reach::Anywhere => whole_text_if(self.custom_matched(index)),
            Reach::Literals(_) => whole_text_if(self.literals_found.contains(&index)),
            Reach::Runs { around, digits } => Windows::Runs {
                runs: self.runs[around as usize]
                    .get_or_init(|| around.runs(self.text.as_bytes()))
                    .iter(),
                digits,
            },
        }
    }

    /// Whether the pattern of the custom detector at `index` matches somewhere in the text.
    fn custom_matched(&self, index: usize) -> bool {
        let mut index = index;
        for matches in &self.custom {
            if index < matches.len() {
                return matches.matched(index);
            }
            index -= matches.len();
        }
        false
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

impl Detectors {
    /// Where a streamed text can be cut in `text[from..]`, its values judged with `text[..from]`
    /// (text already sent) before them: before the longest tail that any detector could still
    /// extend into one of its values, and never inside a value found in the text. What follows
    /// the cut waits for more text; what comes before it can be guarded and sent. Returns a cut
    /// in `text`, at `from` or after.
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

    /// The most bytes [`Detectors::safe_cut_from`] holds back: the longest value of any detector.
    pub fn max_holdback(&self) -> usize {
        self.detectors
            .iter()
            .map(|detector| detector.hold.max())
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::edge::guard::Masker;
    use crate::edge::guard::testing::mask_all;

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
}
