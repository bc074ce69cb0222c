"""The package itself: a light import, a public API that resolves, and float64 where chaosgd computes only."""

import subprocess
import sys


def test_import_loads_no_module_of_the_package_before_it_is_used():
    code = ("import sys, chaosgd; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('chaosgd', 'scipy', 'optax', 'matplotlib', 'pandas', 'jax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['chaosgd']"  # (jax neither: importing chaosgd changes none of its settings)


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


# Exports that compute with numpy alone (on Records' arrays), or hold no arrays: they need no float64 scope.
_NO_JAX = {"ChaosgdError", "preset", "PRESETS", "Config", "RunDir", "Records", "Objective", "local_exponent",
           "network_exponent", "time_to_accuracy"}


def test_every_public_entry_point_computes_in_float64():
    # A new export that computes with JAX must be wrapped in chaosgd.precision.float64, or be listed above.
    import chaosgd
    for name in sorted(set(chaosgd.__all__) - _NO_JAX):
        value = getattr(chaosgd, name)
        if isinstance(value, type):  # a model: what makes or takes parameters
            for method in ("init", "apply"):
                assert getattr(getattr(value, method), "computes_in_float64", False), f"{name}.{method}"
        else:
            assert getattr(value, "computes_in_float64", False), name


def test_chaosgd_computes_in_float64_and_leaves_jax_float64_off():
    # In a process of its own whose JAX float64 is off (JAX's default): the paper's pipeline, a user's model whose
    # init makes arrays of the default dtype, and the same pipeline again with float64 on for the whole process,
    # which must give the same bits.
    code = """
import numpy as np, jax, jax.numpy as jnp
import chaosgd
from chaosgd import MLP, classification, epsilon_ball, initial_conditions, run, top_eigenvalue
from chaosgd.datasets import make_blobs
from chaosgd.experiments.search import model_evaluator
from chaosgd.hessian import hessian_vector_product
from chaosgd.models import FunctionModel, from_equinox

def pipeline(model):
    d = make_blobs(n_train=40, n_test=20, n_features=4, n_classes=3, seed=0).arrays()
    ball = epsilon_ball(initial_conditions(model, 2, seed=0), 1, epsilon=1e-8)
    objective = classification(model)
    records = run(objective, ball, 0.5, d, epochs=5)
    one = jax.tree_util.tree_map(lambda leaf: leaf[0, 0], ball)
    evaluate = model_evaluator(model, d, n_initial=2, n_copies=1, epochs=4)
    evaluate(0.5)
    evaluation = evaluate.extend(0.5, 1)  # (the evaluator's later calls, outside model_evaluator's own)
    flat, hvp = hessian_vector_product(objective, one, d)
    return {"distance": records.distance, "loss": records.loss,
            "sharpness": np.asarray(top_eigenvalue(objective, one, d).value),
            "direct_loss": np.asarray(objective.loss(one, d)[0]),
            "direct_apply": np.asarray(model.apply(one, d["x_train"])),
            "hvp": np.asarray(hvp(jnp.ones_like(flat))),  # (the product returned, called later)
            "evaluation": np.array([evaluation.lambda_nmle, evaluation.n_networks]),
            "dtypes": {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(ball)}}

def user_model():
    return FunctionModel(lambda key: {"w": jax.random.normal(key, (4, 3))}, lambda p, x: x @ p["w"])

def equinox_model():
    import equinox as eqx
    return from_equinox(lambda key: eqx.nn.MLP(4, 3, 5, 1, key=key))

models = [lambda: MLP((4, 5, 3)), user_model, equinox_model]
scoped = [pipeline(make()) for make in models]
assert not jax.config.jax_enable_x64 and jnp.zeros(1).dtype == jnp.float32  # (still off for the caller)
# Differentiated by the caller with float64 off: refused by name, not mixed into a float32 program.
from chaosgd.precision import FloatPrecisionError
model = MLP((4, 5, 3))
one = jax.tree_util.tree_map(lambda leaf: leaf[0], initial_conditions(model, 1))
data = make_blobs(n_train=40, n_test=20, n_features=4, n_classes=3, seed=0).arrays()
try:
    jax.grad(lambda p: classification(model).loss(p, data)[0])(one)
except FloatPrecisionError as error:
    assert "jax.enable_x64(True)" in str(error), error
else:
    raise AssertionError("a float32 trace through chaosgd must be refused")
jax.config.update("jax_enable_x64", True)
for mine, whole in zip(scoped, [pipeline(make()) for make in models]):
    assert mine["dtypes"] == {"float64"}, mine["dtypes"]
    assert {mine[key].dtype for key in ("direct_loss", "direct_apply", "hvp")} == {np.dtype("float64")}
    for key in ("distance", "loss", "sharpness", "direct_loss", "direct_apply", "hvp", "evaluation"):
        assert np.array_equal(mine[key], whole[key]), key
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
