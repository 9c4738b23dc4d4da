"""agent.run() twice against the local OpenAI-compatible server: each short-lived loop
closes the SDK's connection pool it opened (no pool outlives its loop)."""

import gc
import warnings

from myagent import create_react_agent
from myagent.agents.llm.fake_server import FakeLLMServer
from myagent.agents.llm.openai_client import client_count, forget_closed_loops
from myagent.agents.llm.openai_llm import OpenAILLM


def test_run_closes_the_pool_of_its_loop():
    # Start clean: clients an earlier test left on its ended loop are dropped (and collected)
    # here, not inside the strict block below.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        forget_closed_loops()
        gc.collect()
    with FakeLLMServer({"default": [{"content": "hi there"}]}) as server:
        llm = OpenAILLM(model="fake", base_url=server.url, api_key="x", max_retries=0)
        agent = create_react_agent(name="a", tools=[], system_prompt="", llm=llm)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            assert agent.run("one") == "hi there"
            assert agent.run("two") == "hi there"
            gc.collect()
        assert client_count() == 0  # closed on the loop that made it
