"""Runnable agent files; serve one with ``myagent-ws server examples/weather_agent.py``."""
