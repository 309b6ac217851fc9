"""What ``pip install .`` installs, and the direction of the layers inside it.

polycap installs one top-level package, ``polycap`` (``polycap.transforms``, ``polycap.report``,
``polycap.pipeline``), so nothing of another distribution's or a user's ``pipeline`` or
``transforms`` can shadow or overwrite it; and the layers point one way: the stages know neither
the report nor the driver, the report does not know the driver."""

import ast
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

FOLDERS = {"transforms": "polycap.transforms", "report": "polycap.report", "pipeline": "polycap.pipeline"}
# What each layer may import of polycap's: its own package and the layers below it.
MAY_IMPORT = {
    "transforms": {"polycap.transforms"},
    "report": {"polycap.transforms", "polycap.report"},
    "pipeline": {"polycap.transforms", "polycap.report", "polycap.pipeline"},
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel ``pip install .`` would install, built from a copy of what setup.py reads."""
    source = tmp_path_factory.mktemp("source")
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("polycap-*.whl")
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_wheel_installs_one_top_level_package(wheel):
    top_level = {name.split("/")[0] for name in wheel}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"polycap"}
    (info,) = [name for name in top_level if name.endswith(".dist-info")]
    assert wheel[f"{info}/top_level.txt"].decode().split() == ["polycap"]
    entry_points = wheel[f"{info}/entry_points.txt"].decode()
    assert "polycap = polycap.pipeline.command:console" in entry_points


def test_the_wheel_carries_every_module_under_polycap(wheel):
    for folder in FOLDERS:
        for module in (ROOT / folder).rglob("*.py"):
            assert f"polycap/{module.relative_to(ROOT).as_posix()}" in wheel, module


def _polycap_imports(path):
    """Every ``polycap...`` module a file imports, at any depth (imports inside functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("polycap"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("polycap"):
            yield node.module


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_layers_point_one_way(folder):
    crossing = [
        f"{module.relative_to(ROOT)} imports {imported}"
        for module in sorted((ROOT / folder).rglob("*.py"))
        for imported in _polycap_imports(module)
        if ".".join(imported.split(".")[:2]) not in MAY_IMPORT[folder]
    ]
    assert crossing == []


def test_no_module_imports_the_old_top_level_names():
    for folder in (*FOLDERS, "tests", "benchmarks"):
        for module in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(module.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = (
                    [alias.name for alias in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )
                assert not [n for n in names if n.split(".")[0] in FOLDERS], module
