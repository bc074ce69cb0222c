"""The README's examples of section 3 (your own model from Python) run as printed."""

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
