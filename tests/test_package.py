"""The package itself: a light import, and a public API that resolves."""

import subprocess
import sys


def test_import_loads_no_module_of_the_package_before_it_is_used():
    code = ("import sys, chaosgd; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('chaosgd', 'scipy', 'optax', 'matplotlib', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['chaosgd']"


def test_every_public_name_resolves_and_is_listed():
    import chaosgd
    assert set(chaosgd.__all__) == set(chaosgd._WHERE)
    for name in chaosgd.__all__:
        assert getattr(chaosgd, name) is not None
        assert name in dir(chaosgd)
    try:
        chaosgd.no_such_name
    except AttributeError as error:
        assert "no attribute 'no_such_name'" in str(error)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_every_source_of_the_compiled_library_ships_with_the_package():
    # A wheel without one of them builds no library: every float64 product then falls back to XLA's.
    import tomllib
    from pathlib import Path

    from chaosgd import gemm

    root = Path(__file__).resolve().parents[1]
    shipped = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["chaosgd"]
    for source in gemm._SOURCES:
        assert source in shipped, source
        assert (Path(gemm.__file__).parent / source).is_file(), source
