//! The OpenAI error envelope, `{"error":{"message","type","param","code"}}`, and the one place
//! where a failure becomes an HTTP status.

use serde::Serialize;

/// An error answered to the client in OpenAI's exact shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status to answer with.
    pub status: u16,
    /// A human-readable explanation; never echoes secrets from the request.
    pub message: String,
    /// OpenAI's `type`, such as `invalid_request_error` or `server_error`.
    pub kind: &'static str,
    /// The request parameter at fault, in OpenAI's path notation (`messages[0].role`).
    pub param: Option<String>,
    /// A machine-readable code, such as `missing_required_parameter`.
    pub code: Option<&'static str>,
}

const INVALID_REQUEST: &str = "invalid_request_error";

impl ApiError {
    /// 400: the body is not JSON (malformed, truncated, empty or not UTF-8).
    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        Self::bad_request(
            format!(
                "We could not parse the JSON body of your request ({detail}). \
                 The OpenAI API expects a JSON payload."
            ),
            None,
            None,
        )
    }

    /// 400: a required parameter is absent.
    pub fn missing_parameter(param: &str) -> Self {
        Self::bad_request(
            format!("Missing required parameter: '{param}'."),
            Some(param),
            Some("missing_required_parameter"),
        )
    }

    /// 400: a parameter has the wrong JSON type; `got` is a phrase such as `an integer`.
    pub fn invalid_type(param: &str, expected: &str, got: &str) -> Self {
        Self::bad_request(
            format!("Invalid type for '{param}': expected {expected}, but got {got} instead."),
            Some(param),
            Some("invalid_type"),
        )
    }

    /// 400: a parameter has a value outside the supported set.
    pub fn invalid_value(param: &str, value: &str, supported: &[&str]) -> Self {
        let supported = supported
            .iter()
            .map(|v| format!("'{v}'"))
            .collect::<Vec<_>>()
            .join(", ");
        Self::bad_request(
            format!("Invalid value: '{value}'. Supported values are: {supported}."),
            Some(param),
            Some("invalid_value"),
        )
    }

    /// 400: an array parameter that must not be empty is empty.
    pub fn empty_array(param: &str) -> Self {
        Self::bad_request(
            format!(
                "Invalid '{param}': empty array. Expected an array with minimum length 1, \
                 but got an empty array instead."
            ),
            Some(param),
            Some("empty_array"),
        )
    }

    /// 413: the body is larger than the configured limit.
    pub fn request_too_large(limit: u64) -> Self {
        Self {
            status: 413,
            message: format!("The request body exceeds the limit of {limit} bytes."),
            kind: INVALID_REQUEST,
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// 405: a handled path was called with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self {
            status: 405,
            message: format!("Invalid method for URL ({method} {path})"),
            kind: INVALID_REQUEST,
            param: None,
            code: None,
        }
    }

    /// 404: a path llm-edge does not serve, when the config refuses unclaimed paths (OpenAI's
    /// wording for an unknown URL).
    pub fn unknown_url(method: &str, path: &str) -> Self {
        Self {
            status: 404,
            message: format!("Invalid URL ({method} {path})"),
            kind: INVALID_REQUEST,
            param: None,
            code: Some("unknown_url"),
        }
    }

    /// 404: replay found no fixture for the request (`key` is its canonical key, so a test
    /// that fails says which request to record).
    pub fn fixture_not_found(key: &str) -> Self {
        Self {
            status: 404,
            message: format!(
                "No fixture matches this request (key {key}). Record it (mode \"record\", or \
                 on_miss \"passthrough\" with record_misses), or add a rule to \
                 mock.fixtures.rules."
            ),
            kind: INVALID_REQUEST,
            param: None,
            code: Some("fixture_not_found"),
        }
    }

    /// 502: the upstream's reply cannot be passed on, because llm-edge could not read what it
    /// promised to guard or account (`why` says what, never what the reply held).
    pub fn bad_gateway(why: &str) -> Self {
        Self {
            status: 502,
            message: format!("The upstream's reply was refused by llm-edge: {why}"),
            kind: "server_error",
            param: None,
            code: Some("upstream_reply_unreadable"),
        }
    }

    /// 500: a bug in llm-edge, contained to this request.
    pub fn internal() -> Self {
        Self {
            status: 500,
            message: "The server had an error while processing your request. Sorry about that!"
                .to_owned(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// 400 with a message of its own, for rules that fit none of the constructors above.
    pub fn bad_request(message: String, param: Option<&str>, code: Option<&'static str>) -> Self {
        Self {
            status: 400,
            message,
            kind: INVALID_REQUEST,
            param: param.map(str::to_owned),
            code,
        }
    }

    /// The JSON body: `{"error":{"message":…,"type":…,"param":…,"code":…}}`.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Body<'a>,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        let envelope = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        serde_json::to_vec(&envelope).expect("serializing plain strings cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body(err: &ApiError) -> Value {
        serde_json::from_slice(&err.to_json()).unwrap()
    }

    #[test]
    fn envelope_has_all_four_fields_even_when_null() {
        assert_eq!(
            body(&ApiError::internal()),
            json!({"error": {
                "message": "The server had an error while processing your request. Sorry about that!",
                "type": "server_error", "param": null, "code": null}})
        );
    }

    #[test]
    fn missing_parameter_names_the_field() {
        let err = ApiError::missing_parameter("messages");
        assert_eq!(err.status, 400);
        assert_eq!(
            body(&err)["error"],
            json!({"message": "Missing required parameter: 'messages'.",
                   "type": "invalid_request_error", "param": "messages",
                   "code": "missing_required_parameter"})
        );
    }

    #[test]
    fn invalid_value_lists_supported_values() {
        let err = ApiError::invalid_value("messages[0].role", "robot", &["user", "assistant"]);
        assert_eq!(
            err.message,
            "Invalid value: 'robot'. Supported values are: 'user', 'assistant'."
        );
        assert_eq!(err.param.as_deref(), Some("messages[0].role"));
    }

    #[test]
    fn statuses_match_the_failure() {
        assert_eq!(ApiError::request_too_large(10).status, 413);
        assert_eq!(ApiError::method_not_allowed("GET", "/v1/x").status, 405);
        assert_eq!(ApiError::invalid_json("eof").status, 400);
    }
}
