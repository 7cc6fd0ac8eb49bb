//! The stats llm-edge keeps in its proxy: each counter and histogram with its name and labels.
//!
//! The filter names them; the ABI layer defines them in Envoy once per config.

/// A counter llm-edge keeps in the proxy's stats, with its label names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Requests answered, by endpoint and outcome (`ok`, `invalid_request`, `fault`, …).
    Requests,
    /// Prompt tokens of answered requests, by model.
    PromptTokens,
    /// Completion tokens of answered requests, by model.
    CompletionTokens,
    /// Faults injected, by type (a status such as `429`, or a stream fault such as `reset`).
    Faults,
    /// Sensitive values detected, by detector and action.
    Detections,
    /// Tokens charged to a budget, by budget and key.
    BudgetTokens,
    /// Requests refused by a budget, by budget and key.
    BudgetRefusals,
    /// Requests refused because their key was new to a budget with no key it could forget, by
    /// budget.
    BudgetKeysFull,
    /// Streamed texts the guard dropped rather than pass unguarded, by reason (`part_cap`: a
    /// stream opened more parts at once than the guard holds).
    GuardDroppedTexts,
    /// Fields a translation left out (no counterpart in the other API), by direction and field.
    TranslationDropped,
    /// Requests answered from fixtures, or missed, by result (`exact`, `rule`, `miss`).
    FixtureReplays,
    /// Exchanges recorded, or not, by outcome (`queued`, `queue_full`, `too_large`,
    /// `incomplete`, `unrecordable`, `fault_injected`, `write_error`).
    FixtureRecords,
}

impl Counter {
    /// Every counter, in the order of [`Counter::index`].
    pub const ALL: [Self; 12] = [
        Self::Requests,
        Self::PromptTokens,
        Self::CompletionTokens,
        Self::Faults,
        Self::Detections,
        Self::BudgetTokens,
        Self::BudgetRefusals,
        Self::BudgetKeysFull,
        Self::GuardDroppedTexts,
        Self::TranslationDropped,
        Self::FixtureReplays,
        Self::FixtureRecords,
    ];

    /// Position in [`Counter::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The stat name, under the module's metrics namespace.
    pub fn name(self) -> &'static str {
        match self {
            Self::Requests => "requests_total",
            Self::PromptTokens => "prompt_tokens_total",
            Self::CompletionTokens => "completion_tokens_total",
            Self::Faults => "faults_total",
            Self::Detections => "guard_detections_total",
            Self::BudgetTokens => "budget_tokens_total",
            Self::BudgetRefusals => "budget_refusals_total",
            Self::BudgetKeysFull => "budget_keys_full_total",
            Self::GuardDroppedTexts => "guard_dropped_texts_total",
            Self::TranslationDropped => "translation_dropped_fields_total",
            Self::FixtureReplays => "fixture_replays_total",
            Self::FixtureRecords => "fixture_records_total",
        }
    }

    /// The label names, in the order values are given.
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            Self::Requests => &["endpoint", "outcome"],
            Self::PromptTokens | Self::CompletionTokens => &["model"],
            Self::Faults => &["type"],
            Self::Detections => &["detector", "action"],
            Self::BudgetTokens | Self::BudgetRefusals => &["budget", "key"],
            Self::BudgetKeysFull => &["budget"],
            Self::GuardDroppedTexts => &["reason"],
            Self::TranslationDropped => &["direction", "field"],
            Self::FixtureReplays => &["result"],
            Self::FixtureRecords => &["outcome"],
        }
    }
}

/// A histogram llm-edge keeps in the proxy's stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Histogram {
    /// Milliseconds from the request to the first token of a streamed reply.
    TimeToFirstTokenMs,
}

impl Histogram {
    /// Every histogram, in the order of [`Histogram::index`].
    pub const ALL: [Self; 1] = [Self::TimeToFirstTokenMs];

    /// Position in [`Histogram::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The stat name, under the module's metrics namespace.
    pub fn name(self) -> &'static str {
        match self {
            Self::TimeToFirstTokenMs => "time_to_first_token_ms",
        }
    }
}
