"""Shared sample tools and scripts for the LLM provider tests."""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}

WEATHER_SCRIPT = {
    "rules": [
        {
            "match": "weather",
            "steps": [
                {
                    "content": "Let me check.",
                    "reasoning": "The user wants weather for {user}",
                    "tool_calls": [{"name": "get_weather", "arguments": {"city": "北京 Beijing", "days": 3}}],
                },
                {"content": "Weather: {tool_result}"},
            ],
        }
    ],
    "default": [{"content": "北京 ☀️ You said: {user}"}],
    "chunk_size": 3,
}
