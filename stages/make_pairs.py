"""Stage make_pairs: the base model answers identity prompts -> data/pairs/pairs.jsonl + metrics/pairs.json.

Rejected = the model's own greedy answer with no system message (its default identity);
chosen = that answer rewritten to carry identity.new_name (and identity.creator where the question is about
the maker); both under identity.system_prompt, or, for a seeded share of the pairs (pairs.default_system_share),
under the system message the saved template supplies when there is none, and for another (pairs.old_system_share)
under one that names an old identity. With pairs.rehearsal > 0, general
prompts answered by the base model itself are added as pairs that keep those answers (pairs.PairBuilder.rehearsal).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from identity_dpo import cpu_kernels
from identity_dpo.atomic import atomic_outputs, write_jsonl
from identity_dpo.chat_format import with_system
from identity_dpo.chat_template import identity_system_prompt
from identity_dpo.data import Prompt, read_jsonl_records, read_prompts
from identity_dpo.errors import DataError
from identity_dpo.generation import Generation, answer_precision, answering_model, check_backend, generate, sample
from identity_dpo.models import check_token_caps, load_model
from identity_dpo.pairs import PairBuilder, extend_answers, old_system_messages, select_prompts
from identity_dpo.params import EXTEND_FACTOR, Params
from identity_dpo.rewrite import IdentityRewriter
from identity_dpo.stage import run_stage

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PROMPTS = Path("data/identity/prompts.jsonl")
BASE_MODEL = Path("models/base")
OUT_DIR = Path("data/pairs")
METRICS = Path("metrics/pairs.json")


def main(params: Params) -> None:
    cpu_kernels.configure(params.cpu_kernels)  # the decoding loop (docs/upgrading.md)
    check_backend(params.pairs.backend, "pairs.backend")  # before any data or weights load
    precision = answer_precision(params.pairs.precision, params.pairs.backend, "pairs.precision")
    identity = params.identity
    prompts = select_prompts(read_prompts(PROMPTS), params.pairs.max_prompts, params.pairs.seed)
    rehearsal = rehearsal_prompts(params)
    check_token_caps(params, BASE_MODEL)  # config.json only: before minutes of generating
    model, tokenizer = load_model(BASE_MODEL)
    model = answering_model(model, precision)  # the bf16 copy, made once for the answers and the rehearsal samples
    conversations = [with_system(p.messages, None) for p in prompts]
    answers = generate(
        model, tokenizer, conversations, max_new_tokens=params.pairs.max_new_tokens,
        batch_size=params.pairs.batch_size, backend=params.pairs.backend, precision=precision,
        desc="Base model answering identity prompts",
    )  # fmt: skip
    rewriter = IdentityRewriter(
        tuple(identity.old_names), identity.new_name, identity.rewrite, identity.introduction,
        identity.creator, tuple(identity.old_creators), identity.maker_introduction,
        tuple(identity.introduction_variants), identity.other_claims,
    )  # fmt: skip
    builder = PairBuilder(
        rewriter, identity.system_prompt, params.pairs.on_token_cap, params.pairs.rehearsal_contrast, params.pairs.seed,
        identity_system_prompt(identity), params.pairs.default_system_share, params.pairs.reject_mixed,
        old_system_messages(params.pairs.old_system_prompts, identity.old_names, identity.old_creators),
        params.pairs.old_system_share,
    )  # fmt: skip
    answers, extended = extended_answers(model, tokenizer, builder, prompts, conversations, answers, params, precision)
    pairs, counts = builder.build(prompts, answers)  # no usable identity pair: the error comes before rehearsal
    counts["extended_at_token_cap"] = extended
    general = rehearsal_answers(model, tokenizer, rehearsal, params, precision) if rehearsal else []
    pairs += builder.rehearsal(rehearsal, general, counts)
    counts["bf16_answers"] = int(precision == "bf16")  # a number, so `dvc metrics diff` shows a change of precision
    with atomic_outputs() as outputs:  # both appear together, only once both are complete
        write_jsonl(outputs.dir(OUT_DIR) / "pairs.jsonl", pairs)
        outputs.write_json(METRICS, dict(sorted(counts.items())))
    print(
        f"make_pairs: {counts['pairs']} pairs from {counts['prompts']} prompts "
        f"({counts['rehearsal_pairs']} rehearsal pairs)"
    )


def extended_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    builder: PairBuilder,
    prompts: list[Prompt],
    conversations: list[list[dict[str, str]]],
    answers: list[Generation],
    params: Params,
    precision: str,
) -> tuple[list[Generation], int]:
    """With pairs.on_token_cap: extend, the cut-off answers whose chosen answer would be one sentence asked again with
    EXTEND_FACTOR times the cap and kept to one more sentence (pairs.extend_answers); else `answers`. Also how many
    answers changed."""
    again = builder.single_sentence_chosen(prompts, answers) if params.pairs.on_token_cap == "extend" else []
    if not again:
        return answers, 0
    longer = generate(
        model, tokenizer, [conversations[i] for i in again], max_new_tokens=EXTEND_FACTOR * params.pairs.max_new_tokens,
        batch_size=params.pairs.batch_size, backend=params.pairs.backend, precision=precision,
        desc="Base model answering cut-off answers again",
    )  # fmt: skip
    return extend_answers(answers, again, longer)


def rehearsal_answers(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], params: Params, precision: str
) -> list[Generation]:
    """The base model's own answers to the rehearsal prompts: greedy, or sampled (pairs.rehearsal_temperature)."""
    cfg = params.pairs
    conversations = [with_system([{"role": "user", "content": p}], params.identity.system_prompt) for p in prompts]
    if cfg.rehearsal_temperature > 0:
        return sample(model, tokenizer, conversations, max_new_tokens=cfg.rehearsal_max_new_tokens,
                      batch_size=cfg.batch_size, temperature=cfg.rehearsal_temperature, seed=cfg.seed,
                      precision=precision, desc="Base model sampling rehearsal answers")  # fmt: skip
    return generate(model, tokenizer, conversations, max_new_tokens=cfg.rehearsal_max_new_tokens,
                    batch_size=cfg.batch_size, backend=cfg.backend, precision=precision,
                    desc="Base model answering rehearsal prompts")  # fmt: skip


def rehearsal_prompts(params: Params) -> list[str]:
    """A seeded sample of pairs.rehearsal general prompts (none when it is 0), each pairs.rehearsal_samples times:
    sampled answers to one prompt differ, and each becomes its own pair."""
    if params.pairs.rehearsal == 0:
        return []
    path = params.pairs.rehearsal_prompts
    try:
        rows = read_jsonl_records(path, {"prompt": str}, "a rehearsal prompt")
    except DataError as exc:
        raise DataError(f"pairs.rehearsal_prompts: {exc}") from None
    if params.pairs.rehearsal > len(rows):
        raise DataError(f"pairs.rehearsal: {params.pairs.rehearsal} rehearsal pairs asked for, but {path} has only "
                        f"{len(rows)} prompts")  # fmt: skip
    chosen = random.Random(params.pairs.seed).sample([row["prompt"] for row in rows], params.pairs.rehearsal)
    return chosen * params.pairs.rehearsal_samples


if __name__ == "__main__":
    run_stage("make_pairs", main)
