"""Tests for myagent.agents.llm (a package so test module names cannot clash)."""
