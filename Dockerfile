# The cluster image that deploy/kubernetes/rayservice.yaml runs: Ray of the manifest's `rayVersion` with this project
# installed from its wheel (the code, graph.py and checkpoints/default, so no node needs this repo). From the repo root:
#
#   pip wheel --no-deps . -w dist && docker build -t registry.example.com/multitask-serve:0.1.0 .
#
# tests/unit/test_dockerfile.py keeps it in step with pyproject.toml (name, version, Python), the Makefile's torch pin
# and the manifest's Ray version. .dockerignore sends the wheel alone as the build context.
FROM rayproject/ray:2.60.0-py311-gpu
COPY dist/multitask_serve-0.1.0-py3-none-any.whl /tmp/
# torch first and pinned, as `make setup` does (the wheel's `torch>=2.4` would take whatever is newest)
RUN pip install --no-cache-dir torch==2.13.0 \
    && pip install --no-cache-dir /tmp/multitask_serve-0.1.0-py3-none-any.whl \
    && rm /tmp/multitask_serve-0.1.0-py3-none-any.whl
