"""load_agent_file and AgentFactory (myagent.agents.loader)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from myagent.agents.agent import Agent
from myagent.agents.exceptions import AgentError, AgentLoadError
from myagent.agents.loader import load_agent_file

# The agent file of the seed README (ws-server-README.zh.md), verbatim.
SEED_AGENT = '''from myagent import create_react_agent
from myagent.tool.base_tool import BaseTool, ToolResult

class GreetTool(BaseTool):
    name = "greet"
    description = "向用户问好"
    parameters = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "用户名"}
        },
        "required": ["name"]
    }
    
    async def execute(self, name: str) -> ToolResult:
        return ToolResult(output=f"Hello, {name}!")

agent = create_react_agent(
    name="greeter",
    tools=[GreetTool()],
    system_prompt="You are a friendly assistant.",
    max_steps=3
)
'''

AGENT_HEADER = "from myagent import create_react_agent\n"


def write(folder: Path, text: str, name: str = "agent.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(path: Path | str) -> AgentLoadError:
    with pytest.raises(AgentLoadError) as info:
        load_agent_file(path)
    error = info.value
    assert isinstance(error, AgentError)
    assert "\n" not in error.reason and "Traceback" not in error.reason
    assert str(error) == f"cannot load agent file {error.path}: {error.reason}"
    return error


# -- success ---------------------------------------------------------------------------


def test_the_seed_agent_file_loads_unchanged(tmp_path: Path) -> None:
    factory = load_agent_file(write(tmp_path, SEED_AGENT, "my_agent.py"))
    assert factory.name == "greeter"
    assert factory.describe() == {
        "name": "greeter",
        "description": "",
        "tools": [{
            "name": "greet",
            "description": "向用户问好",
            "parameters": {
                "type": "object",
                "properties": {"name": {"type": "string", "description": "用户名"}},
                "required": ["name"],
            },
            "requires_confirmation": False,
        }],
    }


async def test_the_seed_agent_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYAGENT_LLM", "offline")
    agent = load_agent_file(write(tmp_path, SEED_AGENT, "my_agent.py")).new()
    assert await agent.arun("/greet name=Alice") == "greet returned: Hello, Alice!"


def test_agent_variable_is_cloned_per_new_agent(tmp_path: Path) -> None:
    factory = load_agent_file(write(tmp_path, SEED_AGENT))
    first, second = factory.new(), factory.new()
    assert isinstance(first, Agent)
    assert first is not second and first is not factory.module.agent
    assert first.history == [] and first.name == "greeter"
    assert [t.name for t in factory.tools] == ["greet"]


def test_create_agent_wins_and_is_called_per_new_agent(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT_HEADER + textwrap.dedent('''
        calls = []
        agent = create_react_agent(name="module-level", tools=[], system_prompt="p")

        def create_agent():
            calls.append(1)
            return create_react_agent(name="factory-made", tools=[], system_prompt="p", description="fresh")
    '''))
    factory = load_agent_file(path)
    assert factory.name == "factory-made"
    assert factory.description == "fresh"
    assert factory.new().name == "factory-made"
    assert len(factory.module.calls) == 2  # the prototype, then new()


def test_sibling_modules_can_be_imported(tmp_path: Path) -> None:
    write(tmp_path, "GREETING = 'hi from a sibling'\n", "helpers_for_loader_test.py")
    path = write(tmp_path, AGENT_HEADER + textwrap.dedent('''
        from helpers_for_loader_test import GREETING
        agent = create_react_agent(name="sib", tools=[], system_prompt=GREETING)
    '''))
    assert load_agent_file(path).new().system_prompt == "hi from a sibling"


def test_each_load_gets_its_own_module(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_AGENT)
    first, second = load_agent_file(path), load_agent_file(path)
    assert first.module is not second.module
    assert first.module.__name__ != second.module.__name__


# -- failures ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert load_error(tmp_path / "nope.py").reason == "file not found"


def test_directory(tmp_path: Path) -> None:
    assert "directory" in load_error(tmp_path).reason


def test_not_a_python_file(tmp_path: Path) -> None:
    assert "not a Python file" in load_error(write(tmp_path, "x = 1\n", "agent.txt")).reason


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    reason = load_error(write(tmp_path, "x = 1\n\ndef broken(:\n    pass\n")).reason
    assert reason.startswith("syntax error at line 3")


def test_import_error_names_the_exception(tmp_path: Path) -> None:
    reason = load_error(write(tmp_path, "import no_such_module_for_myagent_tests\n")).reason
    assert reason == "import failed: ModuleNotFoundError: No module named 'no_such_module_for_myagent_tests'"


def test_exception_at_import(tmp_path: Path) -> None:
    assert load_error(write(tmp_path, "1 / 0\n")).reason == "import failed: ZeroDivisionError: division by zero"


def test_sys_exit_at_import(tmp_path: Path) -> None:
    assert "SystemExit" in load_error(write(tmp_path, "import sys\nsys.exit(3)\n")).reason


def test_invalid_tools_are_an_import_failure(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT_HEADER + "agent = create_react_agent(name='x', tools=[42], system_prompt='p')\n")
    reason = load_error(path).reason
    assert reason.startswith("import failed: ToolDefinitionError:")


def test_no_agent(tmp_path: Path) -> None:
    assert "neither `agent` nor `create_agent()`" in load_error(write(tmp_path, "x = 1\n")).reason


def test_agent_of_the_wrong_type(tmp_path: Path) -> None:
    assert "`agent` is a int, not an agent" in load_error(write(tmp_path, "agent = 42\n")).reason


def test_create_agent_failures(tmp_path: Path) -> None:
    reason = load_error(write(tmp_path, "def create_agent():\n    raise RuntimeError('no key')\n")).reason
    assert reason == "create_agent() failed: RuntimeError: no key"
    reason = load_error(write(tmp_path, "def create_agent():\n    return 'nope'\n")).reason
    assert reason == "create_agent() returned a str, not an agent"
    reason = load_error(write(tmp_path, "create_agent = 3\n")).reason
    assert reason == "create_agent is a int, not a function"


# -- declared environment -----------------------------------------------------------------


def test_declared_environment_of_the_agent_and_the_module(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT_HEADER + "agent = create_react_agent(name='a', env=['SERPER_API_KEY'])\n")
    assert load_agent_file(path).env == ("SERPER_API_KEY",)
    path = write(tmp_path, AGENT_HEADER + "ENV = ['DB_PASSWORD']\n"
                 "def create_agent():\n    return create_react_agent(name='a', env=['SERPER_API_KEY'])\n")
    assert load_agent_file(path).env == ("DB_PASSWORD", "SERPER_API_KEY")
    assert load_agent_file(write(tmp_path, AGENT_HEADER + "agent = create_react_agent(name='a')\n")).env == ()


def test_an_invalid_declaration_is_a_load_error(tmp_path: Path) -> None:
    reason = load_error(write(tmp_path, AGENT_HEADER + "ENV = 'production'\nagent = create_react_agent(name='a')\n")).reason
    assert reason.startswith("ENV must be a list of environment variable names")
    reason = load_error(write(tmp_path, AGENT_HEADER + "agent = create_react_agent(name='a', env='SERPER_API_KEY')\n")).reason
    assert reason.startswith("import failed: DeclarationError: env must be a list of environment variable names")


def test_a_duck_typed_agents_env_attribute_is_not_a_declaration(tmp_path: Path) -> None:
    path = write(tmp_path, "class A:\n    env = 'gym'\n    async def astream(self, t): yield t\n"
                 "    def clone(self): return A()\nagent = A()\n")
    assert load_agent_file(path).env == ()
