"""Regenerate the README's option reference from the settings table."""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from myagent.settings import markdown_table  # noqa: E402

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def render(text: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    return pattern.sub(lambda _: f"{BEGIN}\n{markdown_table()}\n{END}", text)


if __name__ == "__main__":
    readme = ROOT / "README.md"
    readme.write_text(render(readme.read_text()))
