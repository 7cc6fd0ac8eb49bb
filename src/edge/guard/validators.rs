//! The checks of what a built-in detector's pattern finds: a checksum (Luhn for cards, mod-97 for
//! IBANs), a count of digits, or a range (SSNs, IP addresses). A candidate that fails is no value.

/// Checks a candidate a pattern found (a checksum, a range).
pub(super) type Validator = fn(&str) -> bool;

/// The check of a detector whose pattern is the whole check (keys, tokens, custom patterns).
pub(super) fn always(_: &str) -> bool {
    true
}

/// The decimal digits of `text`, in order.
fn digits(text: &str) -> impl DoubleEndedIterator<Item = u32> + '_ {
    text.chars().filter_map(|c| c.to_digit(10))
}

pub(super) fn valid_phone(text: &str) -> bool {
    (10..=15).contains(&digits(text).count())
}

/// The Luhn checksum every payment card number satisfies.
pub(super) fn valid_card(text: &str) -> bool {
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
pub(super) fn valid_ssn(text: &str) -> bool {
    let parts: Vec<u32> = text.split('-').filter_map(|p| p.parse().ok()).collect();
    matches!(parts.as_slice(), [area, group, serial]
        if *area != 0 && *area != 666 && *area < 900 && *group != 0 && *serial != 0)
}

/// The ISO 13616 mod-97 check. Works on characters, never on byte offsets: a pattern's match may
/// hold any character, and a slice inside one is a panic.
pub(super) fn valid_iban(text: &str) -> bool {
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

pub(super) fn valid_ipv4(text: &str) -> bool {
    text.parse::<std::net::Ipv4Addr>().is_ok()
}

pub(super) fn valid_ipv6(text: &str) -> bool {
    text.matches(':').count() >= 2 && text.parse::<std::net::Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use crate::edge::guard::testing::mask_all;

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
}
