"""Configs: every shipped config validates, and a bad `filter_config` is refused with a log line
that names the field, the bad value and what is allowed."""

from __future__ import annotations

import pytest

from harness import BEFORE_1_38, ENVOY_DIR, MOCK_CONFIG, Envoy, render_config, validate

SHIPPED_CONFIGS = sorted(ENVOY_DIR.glob("*.yaml"))


def test_there_are_configs_to_validate():
    assert MOCK_CONFIG in SHIPPED_CONFIGS


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates(config, tmp_path):
    if BEFORE_1_38:
        # As a 1.37 user must: without metrics_namespace, per-route configs named the old way.
        config = render_config(config, tmp_path / config.name)
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{config}' OK" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("filter_config", "expected"),
    [
        ('{"mokc": {}}', "field `mokc`: unknown field `mokc`, expected one of"),
        ('{"mode": "proxy"}', "field `mode`: unknown variant `proxy`, expected one of `mock`, `passthrough`, `record`"),
        ('{"mock": {"content": {"mode": "lorme"}}}', "field `mock.content.mode`: unknown variant `lorme`"),
        ('{"mock": {"content": {"mode": "fixed"}}}', "field `mock.content`: missing field `text`"),
        ('{"max_request_body_bytes": -5}', "field `max_request_body_bytes`: invalid value: integer `-5`"),
        ('{"max_request_body_bytes": 0}', "field `max_request_body_bytes`: 0 is out of range; allowed: 1 to"),
        ('{"api_base_path": "v1/"}', 'field `api_base_path`: "v1/" is not a path prefix; allowed:'),
        ('{"mock": ', "field `mock`: EOF while parsing a value"),
        ('{"mock": {"latency": {"jitter": 2}}}', "field `mock.latency.jitter`: 2 is out of range; allowed: 0 to 1"),
        ('{"mock": {"latency": {"inter_token_ms": -10}}}', "field `mock.latency.inter_token_ms`: invalid value: integer `-10`"),
        ('{"tokenizer": "bpe"}', "field `tokenizer`: unknown variant `bpe`, expected `exact` or `approx`"),
        ("[]", "field `.`: expected a JSON object"),
        ('{"guard": {"custom": [{"name": "bad", "regex": "(unclosed", "action": "mask"}]}}',
         'field `guard.custom[0].regex`: invalid regex "(unclosed": regex parse error'),
        ('{"guard": {"custom": [{"name": "huge", "regex": "\\\\w{1000}\\\\w{1000}\\\\w{1000}", "action": "mask"}]}}',
         "exceeds size limit of 1048576 bytes"),
        ('{"guard": {"custom": [{"name": "Bad Name", "regex": "x", "action": "mask"}]}}',
         'field `guard.custom[0].name`: "Bad Name" is not a name; allowed: letters, digits and'),
        ('{"guard": {"detectors": {"passport": "mask"}}}',
         'field `guard.detectors.passport`: "passport" is not a detector; allowed: '),
        ('{"guard": {"detectors": {"email": "redact"}}}',
         "field `guard.detectors.email`: unknown variant `redact`, expected one of `mask`, `reject`, `monitor`"),
        ('{"guard": {"fields": [{"pointer": "user", "name": "user_id", "action": "mask"}]}}',
         'field `guard.fields[0].pointer`: "user" is not a JSON Pointer'),
        ('{"mock": {"strict_models": true}}', "field `mock.strict_models`: true needs a non-empty mock.models"),
        ('{"mock": {"models": [""]}}', 'field `mock.models[0]`: "" is not a model name'),
        ('{"mock": {"latency": {"time_to_first_token_ms": "fast"}}}',
         'field `mock.latency.time_to_first_token_ms`: invalid type: string "fast"'),
        ('{"budgets": {"limits": [{"name": "b", "tokens": 10, "per": "fortnight", "key": "global"}]}}',
         "field `budgets.limits[0].per`: unknown variant `fortnight`"),
        ('{"transform": {"system_prompts": [{"position": "middle", "content": "x"}]}}',
         "field `transform.system_prompts[0].position`: unknown variant `middle`"),
        ('{"mode": "passthrough", "transform": {"model_aliases": {"a*b*": "c"}}}',
         "field `transform.model_aliases.a*b*`: a pattern may hold at most one '*'"),
    ],
)
def test_bad_filter_config_is_refused_with_the_reason(tmp_path, filter_config, expected):
    config = render_config(MOCK_CONFIG, tmp_path / "bad.yaml", filter_config)
    result = validate(config)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "llm_edge: invalid filter_config: " in output, output
    assert expected in output, output
    assert "Failed to initialize dynamic module" in output


def test_envoy_refuses_to_start_with_a_bad_config(tmp_path):
    config = render_config(MOCK_CONFIG, tmp_path / "bad.yaml", '{"unknown_knob": true}')
    with pytest.raises(RuntimeError, match="unknown field `unknown_knob`"):
        Envoy(config, tmp_path)


def test_an_unknown_filter_name_is_refused(tmp_path):
    config = render_config(MOCK_CONFIG, tmp_path / "envoy.yaml")
    config.write_text(config.read_text().replace("filter_name: llm_edge", "filter_name: llm_other"))
    result = validate(config)
    assert result.returncode != 0
    assert 'invalid filter_name "llm_other"; allowed: "llm_edge"' in result.stdout + result.stderr
