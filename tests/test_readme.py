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
