"""Shared test helpers: the in-process runner, the project's sample data, small record builders."""

from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from polycap.transforms.records import Caption, Pair

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
MULTI30K = SAMPLES / "parallel" / "multi30k"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """The cache of built models (usem3_cache.py) in a folder of the session, not the user's home;
    worker processes inherit it."""
    import os

    from polycap.transforms.usem3_cache import CACHE_DIR_ENV

    directory = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(directory)
    yield directory
    if previous is None:
        del os.environ[CACHE_DIR_ENV]
    else:
        os.environ[CACHE_DIR_ENV] = previous


def local_pipeline(*extra_options: str) -> TestPipeline:
    """A TestPipeline on the in-process FnApiRunner (DirectRunner would try to download Prism)."""
    return TestPipeline(options=PipelineOptions(["--runner=FnApiRunner", *extra_options]))


def caption(caption_id: str, text: str, dataset: str = "coco") -> Caption:
    return Caption(
        caption_id=caption_id,
        dataset=dataset,
        image_id=None,
        image_url=None,
        source_lang="en",
        text=text,
    )


def pair(caption_id: str, text: str, target_lang: str = "de", **filled) -> Pair:
    return Pair.for_language(caption(caption_id, text), target_lang)._replace(**filled)


@pytest.fixture
def multi30k_val():
    """The first lines of Multi30k's validation split: English, German and French."""
    read = lambda lang: (MULTI30K / f"val.{lang}").read_text(encoding="utf-8").splitlines()
    return {lang: read(lang) for lang in ("en", "de", "fr", "cs")}


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """The tiny CTranslate2 model (tests/tiny_translation_model.py), built once per session."""
    from tests.tiny_translation_model import build_model

    return build_model(tmp_path_factory.mktemp("model"), seed=0)


@pytest.fixture(scope="session")
def other_model(tmp_path_factory):
    """Another tiny model: the same vocabulary, other random weights."""
    from tests.tiny_translation_model import build_model

    return build_model(tmp_path_factory.mktemp("other-model"), seed=1)
