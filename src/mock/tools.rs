//! Tool calls and structured output: which tools a reply calls, with what arguments, and
//! schema-valid JSON for `response_format`.

use std::borrow::Cow;

use super::content::seeded;
use super::{random_hex, schema_gen};
use crate::accounting::tokens::Tokenizer;
use crate::api::openai::chat::{ChatRequest, ResponseFormat, Tool, ToolChoice};
use crate::api::openai::generation::{ChoiceText, FinishReason, ToolCallText};

/// The first words of a tool name that say the tool ends the task: pydantic-ai's
/// `final_result`, smolagents' `final_answer`, `submit`, `respond_to_user`, `finish`, `done`.
const FINAL_WORDS: [&str; 6] = ["final", "finish", "submit", "respond", "answer", "done"];

/// Whether the reply calls tools: never with `tool_choice: "none"`; always when the choice
/// forces a call (`required`, Anthropic's `any`, a named tool); with `auto`, unless the
/// conversation ends with a tool's result, which is answered in words so agent loops end.
pub(super) fn calls_tools(request: &ChatRequest) -> bool {
    if request.tools.is_empty() {
        return false;
    }
    match request.tool_choice {
        ToolChoice::None => false,
        ToolChoice::Auto => !request.ends_with_tool_result(),
        ToolChoice::Required | ToolChoice::Named(_) => true,
    }
}

/// Whether a tool's name says it ends the task: its first word, case aside, is one of
/// [`FINAL_WORDS`]. A word ends at a character that is not a letter or digit, or where a
/// capital follows a small letter (`finalResult`, `FinalAnswer`, `FINAL_ANSWER`).
pub(super) fn is_final(name: &str) -> bool {
    let mut previous = None;
    let end = name
        .char_indices()
        .find(|&(_, c)| {
            let camel = c.is_uppercase() && previous.is_some_and(char::is_lowercase);
            previous = Some(c);
            !c.is_alphanumeric() || camel
        })
        .map_or(name.len(), |(i, _)| i);
    let first = &name[..end];
    FINAL_WORDS
        .iter()
        .any(|word| first.eq_ignore_ascii_case(word))
}

/// The tools a reply calls. A named tool: that one. A forced call after a tool's result (the
/// loop of an agent whose output is a tool, such as pydantic-ai's): the first tool whose name
/// says it ends the task, else the first tool not called yet in the conversation, else the
/// first tool. Otherwise those the last user message mentions by name (all of them when
/// parallel calls are allowed, else the first), or the first tool.
pub(super) fn select_tools(request: &ChatRequest) -> Vec<&Tool> {
    match &request.tool_choice {
        ToolChoice::Named(name) => {
            return request
                .tools
                .iter()
                .filter(|tool| &tool.name == name)
                .collect();
        }
        ToolChoice::Required if request.ends_with_tool_result() => {
            let tools = &request.tools;
            let uncalled = |tool: &&Tool| !request.called_tools.contains(&tool.name);
            return tools
                .iter()
                .find(|tool| is_final(&tool.name))
                .or_else(|| tools.iter().find(uncalled))
                .or_else(|| tools.first())
                .into_iter()
                .collect();
        }
        _ => {}
    }
    let prompt = request.last_user_text().to_lowercase();
    let mentioned = |tool: &&Tool| {
        let name = tool.name.to_lowercase();
        prompt.contains(&name) || prompt.contains(&name.replace(['_', '-'], " "))
    };
    let mut picked: Vec<&Tool> = request.tools.iter().filter(mentioned).collect();
    if picked.is_empty() {
        picked.extend(request.tools.first());
    }
    if !request.parallel_tool_calls {
        picked.truncate(1);
    }
    picked
}

/// Choices that call tools, with arguments generated from each tool's parameter schema.
pub(super) fn tool_call_choices(
    tokenizer: Tokenizer,
    request: &ChatRequest,
) -> (Vec<ChoiceText<'static>>, u32) {
    let tools = select_tools(request);
    let mut rng = seeded(request.seed);
    let mut completion_tokens = 0u32;
    let choices = (0..request.n)
        .map(|_| {
            let tool_calls = tools
                .iter()
                .map(|tool| {
                    let arguments = schema_gen::generate(&tool.parameters, &mut rng).to_string();
                    let pieces = tokenizer.pieces(&request.model, &arguments, None);
                    let tokens: u32 = pieces.iter().map(|piece| piece.tokens).sum();
                    let name_tokens = tokenizer.count(&request.model, &tool.name);
                    completion_tokens = completion_tokens.saturating_add(tokens + name_tokens);
                    let cuts = pieces
                        .iter()
                        .scan(0, |end, piece| {
                            *end += piece.text.len();
                            Some(*end)
                        })
                        .collect();
                    ToolCallText {
                        id: format!("call_{}", &random_hex()[..24]),
                        name: tool.name.clone(),
                        arguments,
                        cuts,
                    }
                })
                .collect();
            ChoiceText {
                content: "",
                deltas: Vec::new(),
                tool_calls,
                finish_reason: FinishReason::ToolCalls,
            }
        })
        .collect();
    (choices, completion_tokens)
}

/// The texts of a structured reply: for `json_object`, `{"response": text}`; for `json_schema`,
/// a value generated from the schema. An httpbun override stays as given.
pub(super) fn structure<'a>(request: &ChatRequest, texts: Vec<Cow<'a, str>>) -> Vec<Cow<'a, str>> {
    if request.content_override.is_some() {
        return texts;
    }
    match &request.response_format {
        ResponseFormat::Text => texts,
        ResponseFormat::JsonObject => texts
            .into_iter()
            .map(|text| Cow::Owned(serde_json::json!({ "response": text }).to_string()))
            .collect(),
        ResponseFormat::JsonSchema(schema) => {
            let mut rng = seeded(request.seed);
            texts
                .iter()
                .map(|_| Cow::Owned(schema_gen::generate(schema, &mut rng).to_string()))
                .collect()
        }
    }
}
