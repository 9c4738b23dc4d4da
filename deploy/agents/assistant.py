"""A small assistant with two tools; the web search needs SERPER_API_KEY.

OPENAI_API_KEY picks a real model (without it the offline demo model answers).
The agent declares SERPER_API_KEY (``env=`` below): the server passes it, and
only it, to the sandboxes besides its allow list, and refuses to start without
it. docker-compose.yml mounts this directory; k8s/configmap.yaml holds a copy
(tests/test_deploy.py keeps them equal).
"""

import json
import os
import urllib.request
from datetime import datetime, timezone

from myagent import create_react_agent, tool


@tool
def utc_time() -> str:
    """The current date and time in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@tool
def web_search(query: str) -> str:
    """Search the web and return the top results (title, link, snippet).

    Args:
        query: What to look for.
    """
    request = urllib.request.Request(
        "https://google.serper.dev/search", data=json.dumps({"q": query, "num": 5}).encode(),
        headers={"X-API-KEY": os.environ["SERPER_API_KEY"], "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=15) as response:
        results = json.load(response).get("organic", [])
    return "\n".join(f"{r.get('title')}: {r.get('link')}\n{r.get('snippet', '')}" for r in results) or "no results"


agent = create_react_agent(
    name="assistant",
    tools=[utc_time, web_search],
    system_prompt="You are a concise, helpful assistant. Search the web for anything recent.",
    env=["SERPER_API_KEY"],
)
