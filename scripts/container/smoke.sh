#!/usr/bin/env bash
# Smoke-test the image built by build.sh, offline (--network none), as the image's non-root user:
# imports, non-root uid, CPU-only torch, and the quick tests that need no network.
#   scripts/container/smoke.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/container/env.sh
. "$repo/scripts/container/env.sh"

podman run --rm --network none "$IMAGE" sh -ec '
uid=$(id -u)
echo "user: $(id -un) uid=$uid"
[ "$uid" -ne 0 ] || { echo "FAIL: the image runs as root" >&2; exit 1; }
python -c "
import sys
import torch, transformers, trl, dvc, identity_dpo
assert torch.version.cuda is None, f\"torch is a CUDA build ({torch.version.cuda})\"
print(\"python\", sys.version.split()[0], \"| torch\", torch.__version__, \"(cuda:\", torch.version.cuda, \")\",
      \"| transformers\", transformers.__version__, \"| trl\", trl.__version__, \"| dvc\", dvc.__version__)
print(\"identity_dpo from\", identity_dpo.__file__)
"
python -c "import pytest" 2>/dev/null || { echo "FAIL: no pytest in the image: build it with INSTALL_DEV=1" >&2; exit 1; }
python -m pytest -q -p no:cacheprovider -m "not slow" \
    tests/test_params.py tests/test_data.py tests/test_pairs.py \
    tests/test_names.py tests/test_rewrite.py tests/test_shipped_data.py
'
echo "smoke test passed: $IMAGE"
