"""``import advpure`` gives the entry points, lazily: the package facade sits above every floor but imports
nothing until a name is used, so importing a low-floor module never pulls in the rest of the library."""

import subprocess
import sys

import pytest

import advpure


def test_import_advpure_loads_no_submodule():
    code = "import sys, advpure; print(sorted(m for m in sys.modules if m.startswith('advpure')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['advpure']"


@pytest.mark.parametrize("name", sorted(advpure.EXPORTS))
def test_every_export_resolves_to_its_module_and_is_documented(name):
    obj = getattr(advpure, name)
    assert obj.__module__ == advpure.EXPORTS[name] or advpure.EXPORTS[name].startswith(obj.__module__.rsplit(".", 1)[0])
    assert (obj.__doc__ or "").strip(), f"advpure.{name} has no docstring"
    assert name in dir(advpure) and name in advpure.__all__


def test_unknown_name_is_a_clear_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'DifPure'"):
        advpure.DifPure  # noqa: B018
