"""Summarizes what it is given; no tools, so one sandbox serves many sessions cheaply."""

from myagent import create_react_agent

agent = create_react_agent(
    name="summarizer",
    system_prompt="Summarize the user's text in three short bullet points.",
)
