"""Point this checkout's params.yaml at a tiny model, so `dvc repro evaluate` takes seconds a stage.

Used by scripts/container/cache_check.sh inside the image: builds the tests' tiny Llama (random
weights, the real SmolLM2 tokenizer and chat template, from the shipped GGUF) and applies the
tests' fast settings (tests/tiny_model.py), with the tests' small held-out sets
(data/eval/few_*.jsonl, tests/pipeline_copy.py). Never run it in a checkout you care about: it
rewrites params.yaml.

    python scripts/container/tiny_params.py [MODEL_DIR]   (default /tmp/tiny-model)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-model")
    sys.path.insert(0, str(ROOT / "tests"))
    from pipeline_copy import write_small_evalset
    from tiny_model import build_tiny_model, tiny_pipeline_params

    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir)
    params_file = ROOT / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    fast = tiny_pipeline_params(model_dir)
    fast["evaluate"].update(write_small_evalset(ROOT))
    for section, values in fast.items():
        params[section].update(values)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    print(f"params.yaml now uses the tiny model in {model_dir}")


if __name__ == "__main__":
    main()
