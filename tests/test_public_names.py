"""Every public submodule of minicnn is an attribute of the package after ``import minicnn``
alone (loaded on first use), as the README's ``mc.data.load_mnist()`` and ``mc.models`` assume."""

import subprocess
import sys
from pathlib import Path

import minicnn

PACKAGE = Path(minicnn.__file__).parent


def public_submodules() -> list[str]:
    names = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_")}
    names |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    return sorted(names)


def test_every_submodule_is_an_attribute_after_import_minicnn_alone():
    names = public_submodules()
    assert {"data", "models", "naive", "diagnostics", "layers"} <= set(names)
    code = f"""
import sys, minicnn as mc
names = {names!r}
assert "minicnn.models" not in sys.modules  # nothing loaded before it is asked for
missing = [n for n in names if not hasattr(mc, n)]
assert not missing, missing
assert mc.models.mnist_cnn().num_parameters() > 0
assert callable(mc.data.load_mnist)
assert set(names) <= set(dir(mc))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_an_unknown_attribute_is_still_an_attribute_error():
    try:
        minicnn.no_such_module  # noqa: B018
    except AttributeError as err:
        assert "no_such_module" in str(err)
    else:
        raise AssertionError("minicnn.no_such_module did not raise AttributeError")
