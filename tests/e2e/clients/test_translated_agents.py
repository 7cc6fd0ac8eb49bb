"""pydantic-ai agents through a translating Envoy, one per direction: each speaks its own API (Chat
Completions, Responses, Anthropic Messages) to envoy/translate.yaml, whose upstream is llm-edge's
mock of the other API in a second Envoy. Each agent has a tool and a typed output, so it runs a
multi-turn tool loop (its tool call, the tool's result sent back, the output tool) and must parse
every translated reply, whole and streamed, in its own SDK.

pydantic-ai sends `tool_choice: "required"` (Anthropic's `any`) at every step: the loop ends only
if the translated tool choice reaches the upstream and the tool result's id survives both ways."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider

from harness import ENVOY_DIR, MODULE_STATS

CONFIG = ENVOY_DIR / "translate.yaml"


class Forecast(BaseModel):
    city: str
    degrees: int
    sunny: bool


@pytest.fixture()
def envoys(start_envoy):
    """The translating Envoy and its upstream (llm-edge's mock, which speaks every API, so only
    its stats tell which API it was asked in), new for each test."""
    upstream = start_envoy()
    proxy = start_envoy(CONFIG, cluster_ports={"anthropic": upstream.port,
                                               "openai_compatible": upstream.port})
    yield proxy, upstream
    assert proxy.alive() and upstream.alive()


# Each client API, with a model its route translates (claude-* chat goes to Anthropic; Messages
# and Responses clients go to the chat upstream), and the upstream endpoint it must reach.
MODELS = {
    "chat to messages": (lambda url: OpenAIChatModel(
        "claude-sonnet-4-6", provider=OpenAIProvider(base_url=url + "/v1", api_key="unused")),
        "messages"),
    "responses to chat": (lambda url: OpenAIResponsesModel(
        "gpt-4o", provider=OpenAIProvider(base_url=url + "/v1", api_key="unused")),
        "chat_completions"),
    "messages to chat": (lambda url: AnthropicModel(
        "gpt-4o", provider=AnthropicProvider(base_url=url, api_key="unused")),
        "chat_completions"),
}


def assert_upstream_asked_in(upstream, endpoint: str, turns: int) -> None:
    """Every model turn reached the upstream in its API, and none in the client's."""
    upstream.wait_for_stat(f"{MODULE_STATS}.requests_total.endpoint.{endpoint}.outcome.ok", turns)
    stats = upstream.admin_get(f"/stats?filter=^{MODULE_STATS}.requests_total")
    asked = {line.split(": ")[0] for line in stats.splitlines() if not line.endswith(": 0")}
    assert asked == {f"{MODULE_STATS}.requests_total.endpoint.{endpoint}.outcome.ok"}


def forecast_agent(model) -> tuple[Agent, list[str]]:
    # Retries make a loop that never ends fail fast rather than spin.
    agent = Agent(model, output_type=Forecast, retries=1)
    lookups: list[str] = []

    @agent.tool_plain
    def look_up_weather(city: str) -> str:
        """The current weather in a city."""
        lookups.append(city)
        return f"{city}: 21 degrees, sunny"

    return agent, lookups


def tool_calls(messages) -> list[str]:
    return [part.tool_name for message in messages for part in getattr(message, "parts", [])
            if part.part_kind == "tool-call"]


@pytest.mark.parametrize("direction", MODELS)
def test_an_agent_runs_its_tool_loop_through_translation(envoys, direction):
    proxy, upstream = envoys
    model, endpoint = MODELS[direction]
    agent, lookups = forecast_agent(model(proxy.base_url))
    result = agent.run_sync("What is the weather in Oslo?")
    assert isinstance(result.output, Forecast)
    assert len(lookups) == 1
    assert tool_calls(result.all_messages()) == ["look_up_weather", "final_result"]
    # The upstream's usage reached the agent through each translated reply.
    usage = result.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    # Two turns: the tool call, then the output tool after the tool's result.
    assert_upstream_asked_in(upstream, endpoint, 2)


@pytest.mark.parametrize("direction", MODELS)
def test_a_streamed_agent_run_through_translation(envoys, direction):
    proxy, upstream = envoys
    model, endpoint = MODELS[direction]
    agent, lookups = forecast_agent(model(proxy.base_url))

    async def run() -> tuple[Forecast, list]:
        async with agent.run_stream("What is the weather in Oslo?") as streamed:
            output = await streamed.get_output()
            return output, streamed.all_messages()

    output, messages = asyncio.run(run())
    assert isinstance(output, Forecast)
    assert len(lookups) == 1
    assert tool_calls(messages) == ["look_up_weather", "final_result"]
    assert_upstream_asked_in(upstream, endpoint, 2)
