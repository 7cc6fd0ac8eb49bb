//! `POST /v1/chat/completions`: the request we read (`request.rs`) and the replies we write
//! (`response.rs`).

mod request;
mod response;

pub use request::{ChatMessage, ChatRequest, ResponseFormat, Tool, ToolChoice};
pub(crate) use request::{MAX_CHOICES, parse_stop, parse_stream_options, parse_tool_choice};
pub use response::{Completion, render_completion, render_stream};

#[cfg(test)]
mod tests;
