"""Fuzz-style: hundreds of generated malformed params files and data rows through validation (fixed seed).

Whatever the input, validation ends in either a PipelineError (one line) or an accepted value; never another
exception (a traceback for the user), and never an accepted value outside its documented range, checked here by
an oracle written independently of params.py's checks.
"""

from __future__ import annotations

import copy
import json
import math
import random
import string
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from identity_dpo.checks import check_held_out, read_texts
from identity_dpo.data import load_prompts
from identity_dpo.errors import PipelineError
from identity_dpo.names import name_pattern
from identity_dpo.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
SEED = 24
N_PARAMS, N_DATA = 240, 240

NASTY: list[Any] = [
    float("inf"), float("-inf"), float("nan"), 10**400, -1, 0, 0.0, -0.0, 1e-320, 2**32, 2**63, -(2**63), 10**19,
    "", " ", "inf", "nan", "1e999", "\ud83d", "a\x00b", "{name}", "{{name}}", "{name.title}", "{org}", "}", "{",
    "{0}", "{name!r}", "Smol LM", "smollm2", None, True, False, [], {}, [None], {"a": 1}, ["sigmoid"] * 3,
    "x" * 10_000, "ünïcödé", "\u202e", 3.5, 7, 4096, 4097, 1_048_576, 1_048_577,
]  # fmt: skip


def leaves(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict):
        return [path for key, value in node.items() for path in leaves(value, (*prefix, key))] or [prefix]
    return [prefix]


def set_path(node: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def mutate_params(rng: random.Random, base: dict[str, Any], base_text: str) -> str:
    """One malformed params file, as text (some mutations only exist as text: duplicates, bad bytes, cut YAML)."""
    kind = rng.choice(["value", "value", "value", "two-values", "delete", "unknown", "section", "duplicate", "cut",
                       "digits", "garbage"])  # fmt: skip
    raw = copy.deepcopy(base)
    paths = leaves(raw)
    if kind in ("value", "two-values"):
        for _ in range(1 if kind == "value" else 2):
            set_path(raw, rng.choice(paths), rng.choice(NASTY))
    elif kind == "delete":
        path = rng.choice(paths)
        node = raw
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1])
    elif kind == "unknown":
        set_path(raw, (*rng.choice(paths)[:-1], rng.choice(["betta", "seeed", "x", "0", "name "])), 1)
    elif kind == "section":
        raw[rng.choice(list(raw))] = rng.choice(NASTY)
    elif kind == "duplicate":
        lines = base_text.splitlines(keepends=True)
        i = rng.choice([n for n, line in enumerate(lines) if line.startswith("  ") and ":" in line])
        return "".join(lines[: i + 1] + [lines[i]] + lines[i + 1 :])
    elif kind == "cut":
        return base_text[: rng.randrange(len(base_text))] + rng.choice(["[", "{", ":", "'", '"', "\t", "- "])
    elif kind == "digits":
        path = rng.choice(paths)
        text = yaml.safe_dump(raw, sort_keys=False)
        return text.replace(f"{path[-1]}: ", f"{path[-1]}: {'9' * rng.choice([20, 400, 4301, 5000])} #", 1)
    else:
        return "".join(rng.choice(string.printable + "{}[]:&*!|>%@`\u00e9\ud83d") for _ in range(rng.randrange(200)))
    try:
        return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return base_text + "\n?"


# --- the oracle: what params.yaml's comments and docs/bad-input.md promise, written out independently ----------


def all_numbers(node: Any) -> list[float]:
    if is_dataclass(node):
        return [n for f in fields(node) for n in all_numbers(getattr(node, f.name))]
    if isinstance(node, list):
        return [n for item in node for n in all_numbers(item)]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return [node]
    return []


def all_texts(node: Any) -> list[str]:
    if is_dataclass(node):
        return [t for f in fields(node) for t in all_texts(getattr(node, f.name))]
    if isinstance(node, list):
        return [t for item in node for t in all_texts(item)]
    return [node] if isinstance(node, str) else []


def out_of_range(p: Params) -> list[str]:
    t, pr, ev, ident = p.train, p.pairs, p.evaluate, p.identity
    bad = [f"{n} not finite" for n in all_numbers(p) if not math.isfinite(n)]
    bad += [f"text {s[:20]!a} has a surrogate or NUL" for s in all_texts(p)
            if any("\ud800" <= c <= "\udfff" or c == "\x00" for c in s)]  # fmt: skip
    checks = {
        "train.beta": 0 < t.beta <= 1000, "train.learning_rate": 0 < t.learning_rate <= 1,
        "train.epochs": 0 < t.epochs <= 10_000, "train.warmup_ratio": 0 <= t.warmup_ratio < 1,
        "train.loss_weights": all(w >= 0 for w in t.loss_weights) and sum(t.loss_weights) > 0
        and len(t.loss_weights) == len(t.loss_type),
        "train.lora.alpha": 0 < t.lora.alpha, "train.max_length": 16 <= t.max_length <= 2**20,
        "seeds": all(0 <= s <= 2**32 - 1 for s in (t.seed, pr.seed, ev.seed)),
        "batch sizes": all(1 <= b <= 4096 for b in (t.batch_size, pr.batch_size, ev.batch_size, t.grad_accum)),
        "token caps": all(1 <= n <= 2**20 for n in (pr.max_new_tokens, ev.max_new_tokens)),
        "counts": pr.max_prompts >= 0 and pr.rehearsal >= 0 and ev.bootstrap_samples >= 100,
        "new_name": bool(ident.new_name.strip()) and not any(
            name_pattern(o, normalized=True).fullmatch(ident.new_name.strip())
            or name_pattern(ident.new_name, normalized=True).search(o) for o in ident.old_names),
    }  # fmt: skip
    bad += [key for key, ok in checks.items() if not ok]
    for template in (ident.introduction, ident.maker_introduction, ident.default_system_prompt):
        parsed = list(string.Formatter().parse(template))
        if any("{" in lit or "}" in lit for lit, *_ in parsed):
            bad.append(f"template {template!r} keeps a literal brace")
        if any(f is not None and (f not in ("name", "creator") or c or s) for _, f, s, c in parsed):
            bad.append(f"template {template!r} uses another field")
    for template in pr.old_system_prompts:
        parsed = list(string.Formatter().parse(template))
        if any(f is not None and (f not in ("old_name", "old_creator") or c or s) for _, f, s, c in parsed):
            bad.append(f"old system template {template!r} uses another field")
    if not (
        0 <= pr.default_system_share and 0 <= pr.old_system_share and pr.default_system_share + pr.old_system_share <= 1
    ):
        bad.append("system shares")
    return bad


def test_generated_malformed_params_files(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    base_text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    base = yaml.safe_load(base_text)
    refused = accepted = 0
    for i in range(N_PARAMS):
        text = mutate_params(rng, base, base_text)
        path = tmp_path / f"params-{i}.yaml"
        data = text.encode("utf-8", errors="surrogatepass")
        if rng.random() < 0.05:
            data = data.replace(b"e", b"\xe9", 1)  # not UTF-8
        path.write_bytes(data)
        try:
            params = load_params(path)
        except PipelineError as exc:
            message = str(exc)
            assert message.startswith(str(path)), message
            refused += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {i}: {type(exc).__name__} instead of a ParamsError: {exc!s:.300}\n{text[:2000]}")
        accepted += 1
        assert out_of_range(params) == [], f"case {i} accepted out of range values:\n{text[:3000]}"
    assert refused + accepted == N_PARAMS and refused >= N_PARAMS // 2, (refused, accepted)


# --- data rows -----------------------------------------------------------------------------------------------


def nasty_row(rng: random.Random) -> str | bytes:
    value = rng.choice(NASTY[:-10] + ["Who are you?", "\ud83d\ude00 hi", "x" * 9000])
    turn = rng.choice([{"from": "human", "value": value}, {"from": rng.choice(NASTY[:10]), "value": "hi"},
                       {"from": "human"}, {"role": "user", "content": "hi"}, value, [value]])  # fmt: skip
    row = rng.choice([{"conversations": [turn]}, {"conversations": turn}, {"messages": [turn]}, [turn], value,
                      {"conversations": [turn, {"from": "gpt", "value": "ok"}]}, {"conversations": []}])  # fmt: skip
    text = json.dumps(row, allow_nan=True)
    mangle = rng.random()
    if mangle < 0.1:
        return text.encode()[: rng.randrange(1, len(text) + 1)] + b"\xff"
    if mangle < 0.15:
        return "[" * 50_000 + "]" * 50_000
    if mangle < 0.2:
        return '{"conversations": [{"from": "human", "value": "x", "n": ' + "7" * 5000 + "}]}"
    if mangle < 0.25:
        return text[: rng.randrange(len(text) + 1)]
    return text


def test_generated_malformed_data_rows(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    outcomes = {"refused": 0, "accepted": 0}
    for i in range(N_DATA):
        lines = [nasty_row(rng) for _ in range(rng.randrange(1, 4))]
        suffix = rng.choice([".jsonl", ".jsonl", ".json"])
        path = tmp_path / f"rows-{i}{suffix}"
        body = [line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass") for line in lines]
        path.write_bytes(b"[" + b",".join(body) + b"]" if suffix == ".json" else b"\n".join(body))
        for on_bad_row in ("fail", "skip"):
            try:
                prompts, _ = load_prompts(str(path), "train", on_bad_row)
            except PipelineError as exc:
                assert "\n" not in str(exc).strip() or "Traceback" not in str(exc)
                outcomes["refused"] += 1
                continue
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"rows {i} ({on_bad_row}): {type(exc).__name__}: {exc!s:.300}")
            outcomes["accepted"] += 1
            for prompt in prompts:
                assert prompt.messages[-1]["role"] == "user"
                for message in prompt.messages:
                    text = message["content"]
                    assert isinstance(text, str) and text.strip() and len(text) <= 8000
                    text.encode("utf-8")  # no lone surrogate
        # the same file as an evaluation set: read, then duplicates checked
        try:
            check_held_out(
                read_texts(str(path), "question", "evaluate.identity_questions", "a question"), "k", None, ""
            )
        except PipelineError:
            pass
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"rows {i} as an evaluation set: {type(exc).__name__}: {exc!s:.300}")
    assert sum(outcomes.values()) == 2 * N_DATA and outcomes["refused"] > N_DATA // 2, outcomes
