"""pydantic-ai against llm-edge in Envoy: an Agent whose output is a pydantic model and that has a
tool runs its loop to the end. pydantic-ai asks for its output through a `final_result` tool and
sends `tool_choice: "required"` at every step, so the mock must call a tool even after a tool's
result, and the output tool then (README: "What the mock answers")."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider


class Forecast(BaseModel):
    city: str
    degrees: int
    sunny: bool


@pytest.fixture()
def provider(mock_envoy):
    provider = OpenAIProvider(base_url=mock_envoy.base_url + "/v1", api_key="unused")
    yield provider
    assert mock_envoy.alive()


@pytest.mark.parametrize("model_class", [OpenAIChatModel, OpenAIResponsesModel])
def test_an_agent_with_an_output_type_and_a_tool_runs_to_completion(provider, model_class):
    # Retries make a loop that never ends fail fast rather than spin.
    agent = Agent(model_class("gpt-4o", provider=provider), output_type=Forecast, retries=1)
    lookups: list[str] = []

    @agent.tool_plain
    def look_up_weather(city: str) -> str:
        """The current weather in a city."""
        lookups.append(city)
        return f"{city}: 21 degrees, sunny"

    result = agent.run_sync("What is the weather in Oslo?")
    assert isinstance(result.output, Forecast)
    # The tool ran once, then the output tool ended the run.
    assert len(lookups) == 1
    tool_calls = [
        part.tool_name
        for message in result.all_messages()
        for part in getattr(message, "parts", [])
        if part.part_kind == "tool-call"
    ]
    assert tool_calls == ["look_up_weather", "final_result"]
