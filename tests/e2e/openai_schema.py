"""The parts of the official OpenAI OpenAPI schema (openai/openai-openapi) that llm-edge answers,
transcribed as JSON Schema with the spec's component names.

Kept strict where the spec is: every `required` list is the spec's, nullable fields accept null,
and enums are closed. Validation uses Draft 2020-12, which OpenAPI 3.1 schemas are.
"""

from __future__ import annotations

from jsonschema import Draft202012Validator

NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}

COMPLETION_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "prompt_tokens_details": {
            "type": "object",
            "properties": {
                "audio_tokens": {"type": "integer"},
                "cached_tokens": {"type": "integer"},
            },
        },
        "completion_tokens_details": {
            "type": "object",
            "properties": {
                "accepted_prediction_tokens": {"type": "integer"},
                "audio_tokens": {"type": "integer"},
                "reasoning_tokens": {"type": "integer"},
                "rejected_prediction_tokens": {"type": "integer"},
            },
        },
    },
}

SERVICE_TIER = {
    "anyOf": [
        {"type": "string", "enum": ["auto", "default", "flex", "scale", "priority"]},
        {"type": "null"},
    ]
}

LOGPROBS = {
    "anyOf": [
        {
            "type": "object",
            "required": ["content", "refusal"],
            "properties": {
                "content": {"anyOf": [{"type": "array"}, {"type": "null"}]},
                "refusal": {"anyOf": [{"type": "array"}, {"type": "null"}]},
            },
        },
        {"type": "null"},
    ]
}

FINISH_REASONS = ["stop", "length", "tool_calls", "content_filter", "function_call"]

CHAT_COMPLETION_RESPONSE_MESSAGE = {
    "type": "object",
    "required": ["content", "refusal", "role"],
    "properties": {
        "content": NULLABLE_STRING,
        "refusal": NULLABLE_STRING,
        "role": {"type": "string", "enum": ["assistant"]},
        "annotations": {"type": "array"},
        "tool_calls": {"type": "array"},
    },
}

CREATE_CHAT_COMPLETION_RESPONSE = {
    "type": "object",
    "required": ["choices", "created", "id", "model", "object"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "service_tier": SERVICE_TIER,
        "system_fingerprint": {"type": "string"},
        "usage": COMPLETION_USAGE,
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["finish_reason", "index", "message", "logprobs"],
                "properties": {
                    "finish_reason": {"type": "string", "enum": FINISH_REASONS},
                    "index": {"type": "integer"},
                    "message": CHAT_COMPLETION_RESPONSE_MESSAGE,
                    "logprobs": LOGPROBS,
                },
            },
        },
    },
}

CREATE_CHAT_COMPLETION_STREAM_RESPONSE = {
    "type": "object",
    "required": ["choices", "created", "id", "model", "object"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["chat.completion.chunk"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "service_tier": SERVICE_TIER,
        "system_fingerprint": {"type": "string"},
        "usage": {"anyOf": [COMPLETION_USAGE, {"type": "null"}]},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["delta", "finish_reason", "index"],
                "properties": {
                    "delta": {
                        "type": "object",
                        "properties": {
                            "content": NULLABLE_STRING,
                            "refusal": NULLABLE_STRING,
                            "role": {
                                "type": "string",
                                "enum": ["developer", "system", "user", "assistant", "tool"],
                            },
                            "tool_calls": {"type": "array"},
                        },
                    },
                    "logprobs": LOGPROBS,
                    "finish_reason": {
                        "anyOf": [{"type": "string", "enum": FINISH_REASONS}, {"type": "null"}]
                    },
                    "index": {"type": "integer"},
                },
            },
        },
    },
}

CREATE_COMPLETION_RESPONSE = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["text_completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "system_fingerprint": {"type": "string"},
        "usage": COMPLETION_USAGE,
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["finish_reason", "index", "logprobs", "text"],
                "properties": {
                    # Streamed chunks carry null until the last one, as OpenAI sends them.
                    "finish_reason": {
                        "anyOf": [
                            {"type": "string", "enum": ["stop", "length", "content_filter"]},
                            {"type": "null"},
                        ]
                    },
                    "index": {"type": "integer"},
                    "logprobs": {"anyOf": [{"type": "object"}, {"type": "null"}]},
                    "text": {"type": "string"},
                },
            },
        },
    },
}

ERROR_RESPONSE = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "param", "type"],
            "properties": {
                "code": NULLABLE_STRING,
                "message": {"type": "string"},
                "param": NULLABLE_STRING,
                "type": {"type": "string"},
            },
        }
    },
}


def assert_valid(schema: dict, instance: object) -> None:
    """Fails with every schema violation listed, not just the first."""
    errors = sorted(Draft202012Validator(schema).iter_errors(instance), key=lambda e: e.path)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
