"""Point this checkout's params.yaml at a tiny model, so `dvc repro evaluate` takes seconds a stage.

Used by scripts/container/cache_check.sh inside the image: builds the tests' tiny Llama (random
weights, the real SmolLM2 tokenizer and chat template, from the shipped GGUF) and applies the
same fast settings as tests/test_pipeline.py, with the tests' small held-out sets
(data/eval/few_*.jsonl, tests/pipeline_copy.py). Never run it in a checkout you care about: it
rewrites params.yaml.

    python scripts/container/tiny_params.py [MODEL_DIR]   (default /tmp/tiny-model)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "pairs": {"max_prompts": 12, "max_new_tokens": 12, "batch_size": 6, "on_token_cap": "keep"},
    "train": {"batch_size": 4, "max_length": 128},
    "evaluate": {"max_new_tokens": 8, "batch_size": 64},
}


def main() -> None:
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-model")
    sys.path.insert(0, str(ROOT / "tests"))
    from pipeline_copy import write_small_evalset
    from tiny_model import build_tiny_model

    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir)
    params_file = ROOT / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    fast = {**FAST, "evaluate": {**FAST["evaluate"], **write_small_evalset(ROOT)}}
    for section, values in {"model": {"source": str(model_dir)}, **fast}.items():
        params[section].update(values)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    print(f"params.yaml now uses the tiny model in {model_dir}")


if __name__ == "__main__":
    main()
