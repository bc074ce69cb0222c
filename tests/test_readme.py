"""The README's Python examples of sections 3 (your own model) and 5 (a learning rate for it) run as printed."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def section_3_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## 3. "):text.index("## 4. ")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize("index", range(2))
def test_a_readme_example_runs_and_prints_exponents(index, capsys):
    code = section_3_blocks()[index]
    if "import torch" in code:
        pytest.importorskip("torch")
    exec(compile(code, f"README.md section 3, example {index + 1}", "exec"), {"__name__": "__readme__"})
    assert re.search(r"lambda_nmle|lambda_NMLE", capsys.readouterr().out)


def test_the_readme_example_of_section_5_recommends_a_learning_rate_for_a_torch_model(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    text = README.read_text()
    section = text[text.index("## 5. "):text.index("## 6. ")]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md section 5", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert float(out.split()[0]) > 0 and "the fastest training measured" in out
    assert (tmp_path / "sweetspot.png").is_file()


def readme_commands() -> list[str]:
    """The README's `chaosgd` command lines after its two setup commands, in order, comments and line
    continuations resolved."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)[1:]
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("chaosgd "):
                lines.append(line)
    return lines


# What a fresh clone on a CPU machine without the MNIST files cannot run: commands that need DATA, a GPU, a
# running Dask scheduler, or a configuration file the reader writes.
NEEDS_MORE = ("DATA", "--device gpu", "--scheduler", "my-experiment.toml")


@pytest.mark.slow
def test_the_readme_commands_run_in_order_in_one_fresh_folder(tmp_path):
    """Run in order, no command collides with what an earlier one wrote (run folders of other configurations)."""
    import shlex
    import subprocess
    import sys

    commands = [c for c in readme_commands() if not any(word in c for word in NEEDS_MORE)]
    assert len(commands) >= 8 and commands[0] == "chaosgd reproduce iris"
    for command in commands:
        argv = [str(Path(sys.executable).parent / "chaosgd"), *shlex.split(command)[1:]]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    section = README.read_text()
    code = re.findall(r"```python\n(.*?)```", section[section.index("## 2. "):section.index("## 3. ")], flags=re.S)
    for block in code:  # section 2's Python, after the commands
        done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                              timeout=1800)
        assert done.returncode == 0, f"{block}\n{done.stderr[-3000:]}"
