"""A broken agent file stops `myagent-ws server` before it listens; `check` reports it.

The broken files are written to a temporary directory per test (a file with a
syntax error in the repository would trip linters and compileall).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.serverproc import ROOT

from .conftest import SCRIPTED_LLM, TEST_AGENT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

BROKEN = {
    "syntax_error_agent.py": ("from myagent import create_react_agent\n\ndef broken(:\n    pass\n",
                              ["syntax error", "line 3"]),
    "import_error_agent.py": ("import definitely_not_a_module_xyz_123\n",
                              ["import", "definitely_not_a_module_xyz_123"]),
    "no_agent_agent.py": ("x = 1\n", ["agent"]),
    "raising_agent.py": ("raise RuntimeError('agent file exploded on purpose')\n",
                         ["agent file exploded on purpose"]),
    "not_an_agent_agent.py": ("agent = 42\n", ["agent"]),
}


def _run(*args: str, timeout: float = 20.0) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MYAGENT_LLM": SCRIPTED_LLM}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "myagent.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"`myagent-ws {' '.join(args)}` did not exit within {timeout}s:\n{out}\n{err}")
    finally:
        _kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - started


def _kill_group(proc: subprocess.Popen) -> None:
    """Whatever the command left behind (it should be nothing) is killed by its process group."""
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def _processes_serving(path: Path) -> set[int]:
    """Live processes whose command line names ``path`` (front, zygote, sandboxes of that file)."""
    found = set()
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(str(path) in arg for arg in p.info["cmdline"] or []):
                found.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def _write(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(BROKEN[name][0])
    return path


def _server(path: Path | str) -> tuple[subprocess.CompletedProcess, float]:
    return _run("server", str(path), "--host", "127.0.0.1", "--port", "0", "--workers", "2")


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_server_refuses_a_broken_agent_file(tmp_path, name):
    path = _write(tmp_path, name)
    result, elapsed = _server(path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert elapsed < 10, elapsed
    assert name in output, output
    for word in BROKEN[name][1]:
        assert word.lower() in output.lower(), (word, output)
    assert "listening on" not in output
    assert "Traceback" not in output, output
    # No restart loop: the reason is reported once.
    assert output.count("cannot load agent file") <= 2, output


def test_server_refuses_a_missing_file(tmp_path):
    missing = tmp_path / "nowhere_agent.py"
    result, elapsed = _server(missing)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert elapsed < 10
    assert "nowhere_agent.py" in output
    assert "not found" in output.lower(), output
    assert "listening on" not in output


def test_server_leaves_no_process_behind_on_a_broken_file(tmp_path):
    path = _write(tmp_path, "import_error_agent.py")
    result, _ = _server(path)
    assert result.returncode != 0
    deadline = time.monotonic() + 2
    while _processes_serving(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_serving(path)


def test_check_a_good_file():
    result, _ = _run("check", str(TEST_AGENT))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "test-agent" in out
    for tool in ("get_weather", "slow", "dangerous", "fail"):
        assert tool in out
    assert "confirmation" in out  # dangerous asks first


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_a_broken_file(tmp_path, name):
    path = _write(tmp_path, name)
    result, elapsed = _run("check", str(path))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert elapsed < 10
    assert name in output
    for word in BROKEN[name][1]:
        assert word.lower() in output.lower(), (word, output)
    assert "Traceback" not in output


def test_check_a_missing_file(tmp_path):
    result, _ = _run("check", str(tmp_path / "nowhere_agent.py"))
    assert result.returncode != 0
    assert "nowhere_agent.py" in result.stdout + result.stderr
