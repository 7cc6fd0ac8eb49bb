//! Where a reply's text comes from (rules, echo, fixed text, lorem, httpbun's override) and
//! how it is cut into tokens.

use std::borrow::Cow;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{Generation, lorem};
use crate::accounting::tokens::Tokenizer;
use crate::api::openai::generation::{ChoiceText, FinishReason};
use crate::mock::config::{ContentMode, MockConfig, RuleMatch};

/// Texts cut the way a model stops: the choices, the stop sequence each ended at (an index
/// into the generation's `stop`), and their completion tokens.
pub(super) struct Shaped<'t> {
    /// One choice per text.
    pub(super) choices: Vec<ChoiceText<'t>>,
    /// Per choice, the `stop` sequence it ended at, if it did.
    pub(super) stops: Vec<Option<usize>>,
    /// The tokens of all the choices.
    pub(super) completion_tokens: u32,
}

/// Cuts each text the way a model stops (`stop`, then `max_tokens`) into a choice.
pub(super) fn shape_all<'t>(
    tokenizer: Tokenizer,
    generation: &Generation<'_>,
    texts: &'t [Cow<'t, str>],
) -> Shaped<'t> {
    let mut completion_tokens = 0u32;
    let mut stops = Vec::with_capacity(texts.len());
    let mut previous: Option<(&str, Cut<'t>)> = None;
    let choices = texts
        .iter()
        .map(|text| {
            // Choices that share one text (echo, fixed, a rule) are cut into tokens once.
            let cut = match &previous {
                Some((shared, cut)) if std::ptr::eq(*shared, text.as_ref()) => cut.clone(),
                _ => {
                    let cut = shape_reply(tokenizer, generation, text);
                    previous = Some((text, cut.clone()));
                    cut
                }
            };
            completion_tokens = completion_tokens.saturating_add(cut.tokens);
            stops.push(cut.stop);
            cut.choice
        })
        .collect();
    Shaped {
        choices,
        stops,
        completion_tokens,
    }
}

/// A generator seeded by the request's `seed`, or freshly when it has none.
pub(super) fn seeded(seed: Option<i64>) -> StdRng {
    StdRng::seed_from_u64(seed.map_or_else(rand::random, |seed| seed as u64))
}

/// One text cut the way a model stops.
#[derive(Debug, Clone)]
struct Cut<'a> {
    choice: ChoiceText<'a>,
    tokens: u32,
    /// The `stop` sequence it ended at (an index into the generation's `stop`), if it did.
    stop: Option<usize>,
}

/// Cuts `text` the way a model stops: before the first of the generation's `stop` sequences it
/// contains, then at `max_tokens` (`finish_reason: "length"`, and then no stop sequence
/// counts).
fn shape_reply<'a>(tokenizer: Tokenizer, generation: &Generation<'_>, text: &'a str) -> Cut<'a> {
    let stop = generation
        .stop
        .iter()
        .enumerate()
        .filter_map(|(i, sequence)| text.find(sequence.as_str()).map(|at| (at, i)))
        .min();
    let text = stop.map_or(text, |(cut, _)| &text[..cut]);
    // An echo of the whole prompt reuses the prompt's tokens; a cut one is encoded anew.
    let ids = generation
        .prompt_ids
        .filter(|_| text == generation.prompt_text);
    let limit = generation.max_tokens.unwrap_or(u32::MAX);
    let (mut tokens, mut end) = (0u32, 0usize);
    let mut deltas = Vec::new();
    let mut finish_reason = FinishReason::Stop;
    for piece in tokenizer.pieces(generation.model, text, ids) {
        if tokens.saturating_add(piece.tokens) > limit {
            finish_reason = FinishReason::Length;
            break;
        }
        tokens += piece.tokens;
        end += piece.text.len();
        deltas.push(piece.text);
    }
    let choice = ChoiceText {
        content: &text[..end],
        deltas,
        tool_calls: Vec::new(),
        finish_reason,
    };
    let stop = stop
        .filter(|_| finish_reason == FinishReason::Stop)
        .map(|(_, i)| i);
    Cut {
        choice,
        tokens,
        stop,
    }
}

/// Where the reply text of a generation comes from: the request's httpbun override, else the
/// first matching rule, else the configured content mode. Only lorem differs between choices.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source<'a> {
    /// The request's httpbun override.
    Override(&'a str),
    /// A rule's reply, or the fixed content.
    Configured(&'a str),
    /// The prompt, echoed.
    Echo(&'a str),
    /// Filler sentences.
    Lorem { min_tokens: u32, max_tokens: u32 },
}

pub(super) fn reply_source<'a, 'h>(
    config: &'a MockConfig,
    request: &Generation<'a>,
    header: &impl Fn(&str) -> Option<&'h [u8]>,
) -> Source<'a> {
    if let Some(text) = request.content_override {
        return Source::Override(text);
    }
    if let Some(rule) = config
        .rules
        .iter()
        .find(|rule| matches(&rule.when, request, header))
    {
        return Source::Configured(&rule.reply);
    }
    match &config.content {
        ContentMode::Echo {} => Source::Echo(request.prompt_text),
        ContentMode::Fixed { text } => Source::Configured(text),
        ContentMode::Lorem {
            min_tokens,
            max_tokens,
        } => Source::Lorem {
            min_tokens: *min_tokens,
            max_tokens: *max_tokens,
        },
    }
}

/// The reply text of each of the `n` choices, from `source`.
pub(super) fn reply_texts<'a>(
    source: Source<'a>,
    tokenizer: Tokenizer,
    request: &Generation<'a>,
) -> Vec<Cow<'a, str>> {
    let n = request.n as usize;
    match source {
        Source::Override(text) | Source::Configured(text) | Source::Echo(text) => {
            vec![Cow::Borrowed(text); n]
        }
        Source::Lorem {
            min_tokens,
            max_tokens,
        } => {
            let mut rng = seeded(request.seed);
            (0..n)
                .map(|_| {
                    let text = match request.max_tokens {
                        // More words than tokens allowed: the reply is cut with "length".
                        Some(limit) => lorem::filler(&mut rng, limit as usize + 1),
                        None => {
                            let tokens = rng.random_range(min_tokens..=max_tokens);
                            sentence_of_tokens(tokenizer, request.model, &mut rng, tokens)
                        }
                    };
                    Cow::Owned(text)
                })
                .collect()
        }
    }
}

/// Filler of about `tokens` tokens that ends a sentence, so the reply stops naturally.
pub(super) fn sentence_of_tokens(
    tokenizer: Tokenizer,
    model: &str,
    rng: &mut StdRng,
    tokens: u32,
) -> String {
    let text = lorem::filler(rng, tokens as usize);
    let end: usize = tokenizer
        .pieces(model, &text, None)
        .iter()
        .scan(0u32, |count, piece| {
            *count += piece.tokens;
            (*count <= tokens).then_some(piece.text.len())
        })
        .sum();
    let kept = text[..end].trim_end_matches([' ', ',', '.']);
    format!("{kept}.")
}

/// Whether every condition of a rule holds for this request.
pub(super) fn matches<'h>(
    when: &RuleMatch,
    request: &Generation<'_>,
    header: &impl Fn(&str) -> Option<&'h [u8]>,
) -> bool {
    when.model
        .as_ref()
        .is_none_or(|model| *model == request.model)
        && when
            .user_message_regex
            .as_ref()
            .is_none_or(|regex| regex.is_match(request.prompt_text))
        && when
            .header
            .as_ref()
            .is_none_or(|expected| header(&expected.name) == Some(expected.value.as_bytes()))
}
