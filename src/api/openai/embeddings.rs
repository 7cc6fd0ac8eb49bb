//! `POST /v1/embeddings`: the request we read and the response we write.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::json::{parse_object, parse_text_or_tokens, take_model, type_phrase};

/// The most dimensions a request may ask for (text-embedding-3-large's size).
pub const MAX_DIMENSIONS: usize = 3072;

/// One input to embed: text, or text already tokenized.
pub use super::json::TextOrTokens as EmbeddingInput;

/// How the vectors are encoded in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON arrays of numbers.
    Float,
    /// Base64 of little-endian `f32`s.
    Base64,
}

/// The parts of an embeddings request that llm-edge reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsRequest {
    /// The requested model, echoed back.
    pub model: String,
    /// The inputs, at least one.
    pub inputs: Vec<EmbeddingInput>,
    /// Requested vector size, if any.
    pub dimensions: Option<usize>,
    /// `float` (default) or `base64`.
    pub encoding_format: EncodingFormat,
}

impl EmbeddingsRequest {
    /// Parses and validates a request body, with OpenAI's errors for bad input.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let mut fields = parse_object(body)?;
        let model = take_model(&mut fields)?;
        let inputs = parse_text_or_tokens("input", fields.remove("input"), true)?;
        let dimensions = parse_dimensions(&fields)?;
        let encoding_format = match fields.get("encoding_format") {
            None | Some(Value::Null) => EncodingFormat::Float,
            Some(Value::String(format)) if format == "float" => EncodingFormat::Float,
            Some(Value::String(format)) if format == "base64" => EncodingFormat::Base64,
            Some(Value::String(format)) => {
                return Err(ApiError::invalid_value(
                    "encoding_format",
                    format,
                    &["float", "base64"],
                ));
            }
            Some(other) => {
                return Err(ApiError::invalid_type(
                    "encoding_format",
                    "a string",
                    type_phrase(other),
                ));
            }
        };
        Ok(Self {
            model,
            inputs,
            dimensions,
            encoding_format,
        })
    }
}

fn parse_dimensions(fields: &Map<String, Value>) -> Result<Option<usize>, ApiError> {
    match fields.get("dimensions") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            let dimensions = value
                .as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .filter(|d| (1..=MAX_DIMENSIONS).contains(d));
            match dimensions {
                Some(dimensions) => Ok(Some(dimensions)),
                None if value.is_i64() || value.is_u64() => Err(ApiError::bad_request(
                    format!(
                        "Invalid 'dimensions': expected a value from 1 to {MAX_DIMENSIONS}, \
                         but got {value} instead."
                    ),
                    Some("dimensions"),
                    Some("invalid_value"),
                )),
                None => Err(ApiError::invalid_type(
                    "dimensions",
                    "an integer",
                    type_phrase(value),
                )),
            }
        }
    }
}

#[derive(Serialize)]
struct ListJson<'a> {
    object: &'static str,
    data: Vec<EmbeddingJson>,
    model: &'a str,
    usage: UsageJson,
}

#[derive(Serialize)]
struct EmbeddingJson {
    object: &'static str,
    index: usize,
    embedding: VectorJson,
}

#[derive(Serialize)]
#[serde(untagged)]
enum VectorJson {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct UsageJson {
    prompt_tokens: u32,
    total_tokens: u32,
}

/// Renders `CreateEmbeddingResponse` for these vectors, in request order.
pub fn render(
    model: &str,
    vectors: Vec<Vec<f32>>,
    format: EncodingFormat,
    prompt_tokens: u32,
) -> Vec<u8> {
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingJson {
            object: "embedding",
            index,
            embedding: match format {
                EncodingFormat::Float => VectorJson::Float(vector),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    VectorJson::Base64(BASE64.encode(bytes))
                }
            },
        })
        .collect();
    let body = ListJson {
        object: "list",
        data,
        model,
        usage: UsageJson {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    serde_json::to_vec(&body).expect("serializing plain data cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<EmbeddingsRequest, ApiError> {
        EmbeddingsRequest::parse(body.to_string().as_bytes())
    }

    #[test]
    fn reads_every_input_shape() {
        let text = |s: &str| EmbeddingInput::Text(s.into());
        assert_eq!(
            parse(json!({"model": "m", "input": "hi"})).unwrap().inputs,
            [text("hi")]
        );
        assert_eq!(
            parse(json!({"model": "m", "input": ["a", "b"]}))
                .unwrap()
                .inputs,
            [text("a"), text("b")]
        );
        assert_eq!(
            parse(json!({"model": "m", "input": [1, 2, 3]}))
                .unwrap()
                .inputs,
            [EmbeddingInput::Tokens(vec![1, 2, 3])]
        );
        assert_eq!(
            parse(json!({"model": "m", "input": [[1], [2, 3]]}))
                .unwrap()
                .inputs,
            [
                EmbeddingInput::Tokens(vec![1]),
                EmbeddingInput::Tokens(vec![2, 3])
            ]
        );
        let req = parse(
            json!({"model": "m", "input": "x", "dimensions": 256, "encoding_format": "base64"}),
        );
        let req = req.unwrap();
        assert_eq!(
            (req.dimensions, req.encoding_format),
            (Some(256), EncodingFormat::Base64)
        );
    }

    #[test]
    fn bad_input_names_the_param() {
        let cases = [
            (json!({"input": "x"}), "model"),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": 5}), "input"),
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": "m", "input": ["a", 5]}), "input[1]"),
            (json!({"model": "m", "input": [[1], []]}), "input[1]"),
            (json!({"model": "m", "input": [[1, -2]]}), "input[0][1]"),
            (
                json!({"model": "m", "input": "x", "dimensions": 0}),
                "dimensions",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": "9"}),
                "dimensions",
            ),
            (
                json!({"model": "m", "input": "x", "encoding_format": "hex"}),
                "encoding_format",
            ),
        ];
        for (body, param) in cases {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(
                (err.status, err.param.as_deref()),
                (400, Some(param)),
                "{body}"
            );
        }
    }

    #[test]
    fn renders_floats_and_base64() {
        let body: Value =
            serde_json::from_slice(&render("m", vec![vec![0.6, 0.8]], EncodingFormat::Float, 3))
                .unwrap();
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"][0]["object"], "embedding");
        assert_eq!(body["data"][0]["embedding"], json!([0.6, 0.8]));
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 3, "total_tokens": 3})
        );
        let body: Value =
            serde_json::from_slice(&render("m", vec![vec![1.0]], EncodingFormat::Base64, 1))
                .unwrap();
        assert_eq!(body["data"][0]["embedding"], "AACAPw==");
    }
}
