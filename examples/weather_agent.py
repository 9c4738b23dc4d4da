"""Weather assistant: the seed's example agent, with simulated data.

Serve it with ``myagent-ws server examples/weather_agent.py``, or try it
directly (with no LLM configured, the offline demo model runs commands)::

    python -c "import asyncio; from examples.weather_agent import agent; \\
        print(asyncio.run(agent.arun('/get_weather city=Beijing')))"

The data is made up and fixed, so answers are reproducible; no network.
"""

from __future__ import annotations

from dataclasses import dataclass

from myagent import create_react_agent, tool
from myagent.tool.base_tool import ToolResult


@dataclass(frozen=True)
class City:
    name: str
    country: str
    population: str
    area_km2: int
    timezone: str
    known_for: str
    condition: str
    temperature_c: int
    humidity: int
    wind_kmh: int


CITIES = {
    "beijing": City("Beijing", "China", "21.9 million", 16410, "UTC+8",
                    "the Forbidden City, the Great Wall and the Temple of Heaven",
                    "sunny", 18, 35, 12),
    "shanghai": City("Shanghai", "China", "24.9 million", 6341, "UTC+8",
                     "the Bund, Lujiazui's skyline and Yu Garden",
                     "cloudy", 21, 68, 15),
    "guangzhou": City("Guangzhou", "China", "18.8 million", 7434, "UTC+8",
                      "Cantonese cuisine, the Canton Tower and the Canton Fair",
                      "light rain", 26, 82, 9),
    "shenzhen": City("Shenzhen", "China", "17.7 million", 1997, "UTC+8",
                     "its technology industry and Window of the World",
                     "partly cloudy", 27, 75, 11),
    "new york": City("New York", "United States", "8.3 million", 783, "UTC-5",
                     "Times Square, Central Park and the Statue of Liberty",
                     "windy", 12, 55, 28),
    "london": City("London", "United Kingdom", "8.9 million", 1572, "UTC+0",
                   "the British Museum, Big Ben and the Tower of London",
                   "overcast with drizzle", 11, 80, 19),
    "tokyo": City("Tokyo", "Japan", "14.0 million", 2194, "UTC+9",
                  "Shibuya Crossing, Senso-ji temple and its food",
                  "clear", 16, 50, 8),
}

ALIASES = {
    "北京": "beijing", "peking": "beijing",
    "上海": "shanghai",
    "广州": "guangzhou", "廣州": "guangzhou", "canton": "guangzhou",
    "深圳": "shenzhen",
    "纽约": "new york", "紐約": "new york", "nyc": "new york", "new york city": "new york",
    "伦敦": "london", "倫敦": "london",
    "东京": "tokyo", "東京": "tokyo",
}


def find_city(name: str) -> City | None:
    """The city called ``name`` (English or Chinese, any case), if we know it."""
    key = " ".join(name.split()).casefold()
    key = ALIASES.get(key, key)
    return CITIES.get(key)


def _unknown(city: str) -> ToolResult:
    known = ", ".join(c.name for c in CITIES.values())
    return ToolResult(error=f"Unknown city {city!r}. Known cities: {known}.")


@tool
def get_weather(city: str) -> ToolResult:
    """Get the current weather of a city.

    Args:
        city: City name in English or Chinese, e.g. "Beijing" or "北京".
    """
    info = find_city(city)
    if info is None:
        return _unknown(city)
    fahrenheit = round(info.temperature_c * 9 / 5 + 32)
    return ToolResult(
        output=(
            f"{info.name}: {info.condition}, {info.temperature_c}°C ({fahrenheit}°F), "
            f"humidity {info.humidity}%, wind {info.wind_kmh} km/h (simulated data)"
        )
    )


@tool
def get_city_info(city: str) -> ToolResult:
    """Get basic facts about a city: country, population, area, time zone, sights.

    Args:
        city: City name in English or Chinese, e.g. "Shanghai" or "上海".
    """
    info = find_city(city)
    if info is None:
        return _unknown(city)
    return ToolResult(
        output=(
            f"{info.name} ({info.country}): population {info.population}, "
            f"area {info.area_km2:,} km², time zone {info.timezone}; known for {info.known_for}."
        )
    )


agent = create_react_agent(
    name="weather-assistant",
    description="Answers questions about the weather and basic facts of major cities.",
    tools=[get_weather, get_city_info],
    system_prompt=(
        "You are a friendly weather assistant. Use get_weather for current conditions "
        "and get_city_info for facts about a city; never invent numbers the tools did "
        "not return. If a city is unknown, say so and list the cities you know. "
        "Answer in the user's language, briefly."
    ),
    max_steps=5,
)
