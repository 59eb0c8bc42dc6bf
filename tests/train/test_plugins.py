"""A user's modules as plug-ins (study/train/plugins.py): imported by path or by name, once, under
their stem, relative to a space file's folder; every mistake is one line that says where."""
from __future__ import annotations

import sys

import pytest

from study.train.plugins import PluginError, import_plugin, import_plugins, resolve_plugin


@pytest.fixture
def clean_modules():
    """Forget the modules a test imported (their names are the test's own)."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_a_file_is_imported_once_under_its_stem_with_its_siblings(tmp_path, clean_modules):
    (tmp_path / "lkd_sibling.py").write_text("VALUE = 41\n")
    (tmp_path / "lkd_plugin_a.py").write_text("import lkd_sibling\nCOUNT = lkd_sibling.VALUE + 1\n")
    assert import_plugin("lkd_plugin_a.py", base=tmp_path) == "lkd_plugin_a"
    module = sys.modules["lkd_plugin_a"]
    assert module.COUNT == 42
    assert import_plugins([str(tmp_path / "lkd_plugin_a.py")]) == ["lkd_plugin_a"]
    assert sys.modules["lkd_plugin_a"] is module  # not executed again


def test_a_module_name_is_imported_from_sys_path(clean_modules):
    assert import_plugin("json") == "json"
    with pytest.raises(PluginError, match="plug-in module 'lkd_nowhere' not found on sys.path"):
        import_plugin("lkd_nowhere")


def test_paths_resolve_against_the_space_file_s_folder(tmp_path):
    assert resolve_plugin("x/y.py", base=tmp_path) == str((tmp_path / "x" / "y.py").resolve())
    assert resolve_plugin("my_package.models", base=tmp_path) == "my_package.models"


@pytest.mark.parametrize("files, spec, message", [
    ({}, "lkd_missing.py", "plug-in file .*lkd_missing.py does not exist"),
    ({"lkd_bad_syntax.py": "def f(:\n"}, "lkd_bad_syntax.py",
     r"importing plug-in .*lkd_bad_syntax.py failed: SyntaxError: .*\(at .*lkd_bad_syntax.py:1\)"),
    ({"lkd_raises.py": "x = 1\nraise RuntimeError('no GPU here')\n"}, "lkd_raises.py",
     r"failed: RuntimeError: no GPU here \(at .*lkd_raises.py:2\)"),
    ({"lkd_needs.py": "import lkd_not_installed\n"}, "lkd_needs.py",
     "failed: ModuleNotFoundError: No module named 'lkd_not_installed'"),
    ({"models.py": "X = 1\n"}, "models.py", "a module named 'models' is already imported .*; rename the file"),
    ({"lkd_twice.py": "from models import register_model\nregister_model('mlp_1')(lambda s, k: None)\n"},
     "lkd_twice.py", "model 'mlp_1' is registered twice"),
], ids=["missing", "syntax", "raises", "dependency", "name-taken", "registered-twice"])
def test_plug_in_mistakes_are_one_line(files, spec, message, tmp_path, clean_modules):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(PluginError, match=message) as error:
        import_plugin(spec, base=tmp_path)
    assert "\n" not in str(error.value)
    assert spec.removesuffix(".py") not in sys.modules or spec == "models.py"  # a failed import is forgotten
