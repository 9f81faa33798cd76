"""Stage make_pairs: the base model answers identity prompts -> data/pairs/pairs.jsonl + metrics/pairs.json.

Rejected = the model's own greedy answer with no system message (its default identity);
chosen = that answer rewritten to carry identity.new_name; both under identity.system_prompt.
"""

from pathlib import Path

from identity_dpo.atomic import atomic_outputs, write_jsonl
from identity_dpo.data import read_prompts
from identity_dpo.generation import check_backend, generate, with_system
from identity_dpo.models import load_model
from identity_dpo.pairs import PairBuilder, select_prompts
from identity_dpo.params import Params
from identity_dpo.rewrite import IdentityRewriter
from identity_dpo.stage import run_stage

PROMPTS = Path("data/identity/prompts.jsonl")
BASE_MODEL = Path("models/base")
OUT_DIR = Path("data/pairs")
METRICS = Path("metrics/pairs.json")


def main(params: Params) -> None:
    check_backend(params.pairs.backend, "pairs.backend")  # before any data or weights load
    identity = params.identity
    prompts = select_prompts(read_prompts(PROMPTS), params.pairs.max_prompts, params.pairs.seed)
    model, tokenizer = load_model(BASE_MODEL)
    answers = generate(
        model,
        tokenizer,
        [with_system(p.messages, None) for p in prompts],
        max_new_tokens=params.pairs.max_new_tokens,
        batch_size=params.pairs.batch_size,
        backend=params.pairs.backend,
    )
    rewriter = IdentityRewriter(tuple(identity.old_names), identity.new_name, identity.rewrite, identity.introduction)
    pairs, counts = PairBuilder(rewriter, identity.system_prompt, params.pairs.on_token_cap).build(prompts, answers)
    with atomic_outputs() as outputs:  # both appear together, only once both are complete
        write_jsonl(outputs.dir(OUT_DIR) / "pairs.jsonl", pairs)
        outputs.write_json(METRICS, counts)
    print(f"make_pairs: {counts['pairs']} pairs from {counts['prompts']} prompts")


if __name__ == "__main__":
    run_stage("make_pairs", main)
