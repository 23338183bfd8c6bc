#!/usr/bin/env bash
# Install rtune (editable) and its dependencies into the current Python; safe to re-run.
#
# torch goes in first, chosen for the machine, because a bare `torch` requirement on a box without
# torch pulls the multi-GB CUDA build from PyPI:
#   - NVIDIA GPU present (nvidia-smi works): the CUDA build from PyPI;
#   - no GPU, and pip's configured find-links already hold a CPU wheel: that wheel (no download);
#   - no GPU otherwise: the CPU build from download.pytorch.org.
# Override with RTUNE_TORCH_SPEC (default torch==2.13.0) and RTUNE_TORCH_INDEX (an index URL).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SPEC=${RTUNE_TORCH_SPEC:-torch==2.13.0}
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }

if "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
elif [ -n "${RTUNE_TORCH_INDEX:-}" ]; then
  pip_install "$SPEC" --index-url "$RTUNE_TORCH_INDEX" --extra-index-url https://pypi.org/simple
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  pip_install "$SPEC"
elif probe=$(mktemp -d) && "$PY" -m pip download -q --no-index --no-deps -d "$probe" "$SPEC" >/dev/null 2>&1 \
     && compgen -G "$probe/*+cpu*" >/dev/null; then
  pip_install "$SPEC"  # resolves to the local CPU wheel
else
  pip_install "$SPEC" --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
fi

pip_install -e ".[dev]"
"$PY" -c "import torch, ray, transformers; print(f'setup: torch {torch.__version__} (cuda: {torch.cuda.is_available()}), ray {ray.__version__}, transformers {transformers.__version__}')"
