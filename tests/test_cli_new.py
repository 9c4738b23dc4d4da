import subprocess
import sys

from click.testing import CliRunner

from myagent.cli import main


def test_new_scaffolds_a_file_that_loads_and_runs(tmp_path):
    path = tmp_path / "my_bot.py"
    result = CliRunner().invoke(main, ["new", str(path)])
    assert result.exit_code == 0, result.output
    check = CliRunner().invoke(main, ["check", str(path)])
    assert check.exit_code == 0 and "my-bot" in check.output and "shout (asks for confirmation)" in check.output
    run = subprocess.run([sys.executable, "-m", "myagent.cli", "run", str(path), "/add a=2 b=3"],
                         capture_output=True, text=True, env={"MYAGENT_LLM": "offline", "PATH": "/usr/bin:/bin"},
                         timeout=60)
    assert run.returncode == 0 and "5" in run.stdout, run.stdout + run.stderr


def test_new_refuses_to_overwrite(tmp_path):
    path = tmp_path / "a.py"
    path.write_text("keep me")
    result = CliRunner().invoke(main, ["new", str(path)])
    assert result.exit_code == 1 and path.read_text() == "keep me"
    assert CliRunner().invoke(main, ["new", str(tmp_path / "a.txt")]).exit_code == 2
