//! Masking one request's texts and, reversed, its reply's: placeholders numbered per detector,
//! the same value always given the same one, and the originals kept for reversible mode.

use std::borrow::Cow;
use std::collections::HashMap;

use super::config::Action;
use super::detect::{Detectors, Span};

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
    pub(super) fn detected(&mut self, detector: &str, action: Action) {
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
    pub(super) fn placeholder_named(&mut self, name: &str, prefix: &str, value: &str) -> &str {
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

    /// This request's placeholders and the values they stand for.
    pub fn originals(&self) -> impl Iterator<Item = (&str, &str)> {
        self.originals
            .iter()
            .map(|(placeholder, original)| (placeholder.as_str(), original.as_str()))
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::edge::guard::testing::detectors;

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
        let request = detectors(&[("email", Action::Mask)]);
        let replies = detectors(&[("email", Action::Reject)]);
        let mut masker = Masker::default();
        masker.mask(&request, "me: a@x.io").unwrap();
        let reply = masker.restore("[EMAIL_1] and b@y.io");
        assert_eq!(masker.mask_new(&replies, &reply), "a@x.io and [EMAIL_2]");
        assert_eq!(
            masker.restore("[EMAIL_2]"),
            "[EMAIL_2]",
            "new placeholders stay masked"
        );
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
}
