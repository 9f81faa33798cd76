#!/usr/bin/env bash
# Run the test suite inside the test image built by `build.sh --dev`, offline (--network none), as
# the image's non-root user. First checks: not root, imports, a CPU-only torch and no CUDA
# packages at all. Then pytest, by default the quick tests (-m "not slow": every test but the
# real-model one, including tests/test_pipeline.py, the tiny-model `dvc repro`).
#   scripts/container/smoke.sh [PYTEST ARGS]       e.g. smoke.sh tests/test_pipeline.py
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/container/env.sh
. "$repo/scripts/container/env.sh"

require_image "$TEST_IMAGE" "scripts/container/build.sh --dev"
[ $# -gt 0 ] || set -- -m "not slow"

podman run --rm --network none "$TEST_IMAGE" sh -ec '
uid=$(id -u)
echo "user: $(id -un) uid=$uid, in $(pwd)"
[ "$uid" -ne 0 ] || { echo "FAIL: the image runs as root" >&2; exit 1; }
python -c "
import importlib.metadata as md, re, sys
import torch, transformers, trl, dvc, identity_dpo
assert torch.version.cuda is None, f\"torch is a CUDA build ({torch.version.cuda})\"
# CUDA wheels: nvidia-*-cu12/13, cuda-toolkit, cuda-bindings, triton (not dvclive'\''s nvidia-ml-py, pure Python)
cuda = sorted(d.metadata[\"Name\"] for d in md.distributions()
              if re.match(r\"(nvidia-.*-cu[0-9]+|cuda-|triton)\", d.metadata[\"Name\"].lower()))
assert not cuda, f\"CUDA packages in the CPU image: {cuda}\"
print(\"python\", sys.version.split()[0], \"| torch\", torch.__version__, \"(cuda:\", torch.version.cuda, \")\",
      \"| transformers\", transformers.__version__, \"| trl\", trl.__version__, \"| dvc\", dvc.__version__)
print(\"identity_dpo from\", identity_dpo.__file__, \"| no CUDA wheels\")
"
python -c "import pytest" 2>/dev/null || { echo "FAIL: no pytest in the image: build it with build.sh --dev" >&2; exit 1; }
exec python -m pytest -p no:cacheprovider "$@"
' sh "$@"
echo "tests passed inside $TEST_IMAGE"
