"""An agent whose tools do real work: notes kept as files in its sandbox's own directory.

Each sandbox runs in a working directory of its own (see --sandbox-dir), so
the notes live there; names are checked so a tool call cannot escape it.
``create_agent()`` gives every session a fresh agent (and here, its own folder).

    myagent-ws server examples/notes_agent.py
    myagent-ws chat ws://127.0.0.1:8080      # /write_note name=todo text="buy milk", /list_notes
"""

import os
import re
import uuid

from myagent import create_react_agent, tool

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_NOTE = 100_000


def create_agent():
    folder = os.path.join(os.getcwd(), "notes", uuid.uuid4().hex[:12])
    os.makedirs(folder, exist_ok=True)

    def path_of(name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("a note name is 1-64 letters, digits, '-' or '_'")
        return os.path.join(folder, name + ".txt")

    @tool
    def write_note(name: str, text: str) -> str:
        """Save a note (overwrites a note of the same name).

        Args:
            name: Note name: letters, digits, '-' or '_'.
            text: The note's text.
        """
        if len(text) > _MAX_NOTE:
            raise ValueError(f"a note holds at most {_MAX_NOTE} characters")
        with open(path_of(name), "w", encoding="utf-8") as handle:
            handle.write(text)
        return f"saved {name} ({len(text)} characters)"

    @tool
    def read_note(name: str) -> str:
        """Read a note.

        Args:
            name: Note name.
        """
        try:
            with open(path_of(name), encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            raise ValueError(f"no note named {name}") from None

    @tool
    def list_notes() -> str:
        """List the saved notes."""
        names = sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".txt"))
        return ", ".join(names) if names else "no notes yet"

    return create_react_agent(
        name="notes-assistant",
        tools=[write_note, read_note, list_notes],
        system_prompt="You keep the user's notes with your tools.",
        max_steps=5,
    )
