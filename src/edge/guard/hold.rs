//! Stream hold-back, per detector: a streamed text is sent up to the tail that could still grow
//! into a value, so that no value is split between what is sent now and what comes next.

/// How much of the end of a streamed text one detector holds back: the longest tail that could
/// still grow into one of its values, never more than its longest value.
#[derive(Debug, Clone, Copy)]
pub(super) enum Hold {
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
pub(super) const CUSTOM_HOLD: Hold = Hold::Run {
    class: not_whitespace,
    starts: not_whitespace,
    max: 256,
};

fn not_whitespace(c: char) -> bool {
    !c.is_whitespace()
}

pub(super) fn ascii_digit(c: char) -> bool {
    c.is_ascii_digit()
}

pub(super) fn ascii_upper(c: char) -> bool {
    c.is_ascii_uppercase()
}

pub(super) fn email_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-@".contains(c)
}

/// Phone numbers: digits, `+ ( ) . -` and the whitespace `\s` matches (line breaks included).
pub(super) fn phone_char(c: char) -> bool {
    c.is_ascii_digit() || "+().-".contains(c) || c.is_whitespace()
}

pub(super) fn number_start(c: char) -> bool {
    c.is_ascii_digit() || c == '+' || c == '('
}

pub(super) fn card_char(c: char) -> bool {
    c.is_ascii_digit() || c == ' ' || c == '-'
}

pub(super) fn ssn_char(c: char) -> bool {
    c.is_ascii_digit() || c == '-'
}

pub(super) fn iban_char(c: char) -> bool {
    c.is_ascii_digit() || c.is_ascii_uppercase() || c == ' '
}

pub(super) fn ipv4_char(c: char) -> bool {
    c.is_ascii_digit() || c == '.'
}

pub(super) fn ipv6_char(c: char) -> bool {
    c.is_ascii_hexdigit() || c == ':' || c == '.'
}

pub(super) fn jwt_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.".contains(c)
}

pub(super) fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

pub(super) fn aws_char(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}

pub(super) fn github_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub(super) fn slack_char(c: char) -> bool {
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
    pub(super) fn start(self, text: &str, literals: &[&str]) -> usize {
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
    pub(super) fn max(self) -> usize {
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

#[cfg(test)]
mod tests {
    use crate::edge::guard::Action;
    use crate::edge::guard::BUILT_IN;
    use crate::edge::guard::testing::detectors;

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
            assert_eq!(&text[..all.safe_cut_from(text, 0)], sent, "{text:?}");
        }
        // A JWT is held whole while it grows, far past the 256 bytes once held at most.
        let jwt = format!("t eyJhbGciOiJIUzI1NiJ9.eyJ{}", "x".repeat(600));
        assert_eq!(all.safe_cut_from(&jwt, 0), 2);
        // Only the detectors configured hold: words wait for e-mail addresses, not for phones.
        let phones = detectors(&[("phone", Action::Mask)]);
        assert_eq!(phones.safe_cut_from("Hello wor", 0), "Hello wor".len());
        assert_eq!(phones.safe_cut_from("call +1 (415) 55", 0), "call ".len());
        assert_eq!(phones.max_holdback(), 32);
    }
}
