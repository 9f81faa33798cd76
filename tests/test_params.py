from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from identity_dpo.errors import ParamsError
from identity_dpo.params import Params, load_params, params_from_dict

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_are_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.train.loss_type == ["sigmoid", "sft"]
    assert params.identity.new_name == "Deep Qwen"
    assert params.cpu_kernels == "auto"


def _set(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[last] = value
    return raw


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.beta", 0, "train.beta: expected a number in (0, 1000], got 0"),
        ("train.beta", -0.1, "train.beta: expected a number in (0, 1000], got -0.1"),
        ("train.beta", "high", "train.beta: expected a number, got str 'high'"),
        ("train.learning_rate", 0.0, "train.learning_rate: expected a number in (0, 1], got 0"),
        ("train.batch_size", 2.5, "train.batch_size: expected an integer, got float 2.5"),
        ("train.batch_size", True, "train.batch_size: expected an integer, got bool True"),
        ("train.epochs", 0, "train.epochs: expected a number in (0, 10000], got 0"),
        (
            "train.max_length",
            8,
            "train.max_length: expected an integer in [16, 1048576] (prompt plus answer tokens), got 8",
        ),
        ("train.loss_type", ["sigmoid", "nll"], "train.loss_type[1]: expected one of sigmoid"),
        ("train.loss_weights", [1.0], "train.loss_weights: expected one weight per loss type (2), got 1"),
        ("train.precompute_ref_log_probs", "yes", "train.precompute_ref_log_probs: expected true or false"),
        ("identity.new_name", "", "identity.new_name: expected a non-empty name"),
        ("identity.new_name", "smollm", "identity.new_name: expected a name that is not one of the old names"),
        ("identity.old_names", [], "identity.old_names: expected at least one name"),
        ("identity.old_names", "SmolLM", "identity.old_names: expected a list of strings, got str 'SmolLM'"),
        ("identity.introduction", "Hello!", "identity.introduction: expected a template containing {name}"),
        ("identity.rewrite", "name", "identity.rewrite: expected one of names, self_description, introduction"),
        ("identity.other_claims", "remove", "identity.other_claims: expected one of drop, keep, got 'remove'"),
        ("pairs.max_new_tokens", 0, "pairs.max_new_tokens: expected an integer in [1, 1048576], got 0"),
        ("pairs.max_prompts", -1, "pairs.max_prompts: expected an integer in [0, 10000000] (0 means all), got -1"),
        ("data.on_bad_row", "ignore", "data.on_bad_row: expected one of skip, fail, got 'ignore'"),
        ("data.source", None, "data.source: expected a string, got nothing (null)"),
        ("evaluate.batch_size", 0, "evaluate.batch_size: expected an integer in [1, 4096], got 0"),
        ("cpu_kernels", "on", "cpu_kernels: expected one of auto, none, got 'on'"),
        ("cpu_kernels", False, "cpu_kernels: expected one of auto, none, got False"),  # YAML 1.1's unquoted `off`
        ("cpu_kernels", "nope", "cpu_kernels: expected one of auto, none, got 'nope' (did you mean 'none'?)"),
    ],
)
def test_bad_values_name_the_key_and_the_expectation(
    default_params: dict[str, Any], key: str, value: Any, message: str
) -> None:
    with pytest.raises(ParamsError) as error:
        params_from_dict(_set(default_params, key, value))
    assert message in str(error.value)


def test_unknown_key_suggests_the_closest(default_params: dict[str, Any]) -> None:
    default_params["train"]["betta"] = 0.5
    with pytest.raises(ParamsError, match=r"train\.betta: unknown key \(did you mean 'train\.beta'\?\)"):
        params_from_dict(default_params)


def test_unknown_section_is_refused(default_params: dict[str, Any]) -> None:
    default_params["trian"] = {}
    with pytest.raises(ParamsError, match=r"trian: unknown key \(did you mean 'train'\?\)"):
        params_from_dict(default_params)


def test_missing_required_key(default_params: dict[str, Any]) -> None:
    del default_params["train"]["beta"]
    with pytest.raises(ParamsError, match=r"train\.beta: missing \(expected a number\)"):
        params_from_dict(default_params)


def test_optional_keys_take_their_defaults(default_params: dict[str, Any]) -> None:
    del default_params["identity"]["rewrite"]
    del default_params["train"]["warmup_ratio"]
    del default_params["cpu_kernels"]
    params = params_from_dict(default_params)
    assert params.identity.rewrite == "self_description"
    assert params.train.warmup_ratio == 0.0
    assert params.cpu_kernels == "auto"


def test_cpu_kernels_none_turns_the_kernels_off(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("\ncpu_kernels: auto\n", "\ncpu_kernels: none\n"))
    assert load_params(path).cpu_kernels == "none"
    path.write_text(path.read_text().replace("\ncpu_kernels: none\n", "\ncpu_kernels: off\n"))
    with pytest.raises(ParamsError, match=r"params\.yaml: cpu_kernels: expected one of auto, none, got False$"):
        load_params(path)


def test_scientific_notation_without_dot_is_a_number(default_params: dict[str, Any]) -> None:
    default_params["train"]["learning_rate"] = "5e-5"  # YAML 1.1 reads `5e-5` as a string
    assert params_from_dict(default_params).train.learning_rate == pytest.approx(5e-5)


def test_single_loss_type_may_be_a_scalar(default_params: dict[str, Any]) -> None:
    default_params["train"]["loss_type"] = "sigmoid"
    default_params["train"]["loss_weights"] = [1.0]
    assert params_from_dict(default_params).train.loss_type == ["sigmoid"]


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  beta: [0.2\n")
    with pytest.raises(ParamsError, match=rf"{path}: not valid YAML"):
        load_params(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "params.yaml")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match=r"the top level: expected a mapping"):
        load_params(path)


def test_errors_from_a_file_name_the_file(tmp_path: Path, default_params: dict[str, Any]) -> None:
    path = tmp_path / "params.yaml"
    default_params["train"]["beta"] = 0
    path.write_text(yaml.safe_dump(default_params))
    with pytest.raises(ParamsError, match=rf"^{path}: train\.beta: expected a number in \(0, 1000\], got 0$"):
        load_params(path)


# --- issue 24: every number finite and in range, strict templates, names, duplicate keys, unreadable files -------

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.learning_rate", INF, "train.learning_rate: expected a finite number, got inf"),
        ("train.learning_rate", "inf", "train.learning_rate: expected a finite number, got inf"),
        ("train.learning_rate", 2.0, "train.learning_rate: expected a number in (0, 1], got 2"),
        ("train.beta", INF, "train.beta: expected a finite number, got inf"),
        ("train.beta", NAN, "train.beta: expected a finite number, got nan"),
        ("train.epochs", INF, "train.epochs: expected a finite number, got inf"),
        ("train.loss_weights", [1.0, INF], "train.loss_weights[1]: expected a finite number, got inf"),
        ("train.loss_weights", [0.0, 0.0], "train.loss_weights: expected at least one weight > 0"),
        ("train.warmup_ratio", NAN, "train.warmup_ratio: expected a finite number, got nan"),
        ("train.lora.alpha", -INF, "train.lora.alpha: expected a finite number, got -inf"),
        ("train.beta", 10**400, "train.beta: expected a finite number, got an integer of 401 digits"),
        ("train.seed", -1, "train.seed: expected an integer in [0, 4294967295], got -1"),
        ("train.seed", 2**32, "train.seed: expected an integer in [0, 4294967295], got 4294967296"),
        ("pairs.seed", -5, "pairs.seed: expected an integer in [0, 4294967295], got -5"),
        ("evaluate.seed", 2**40, "evaluate.seed: expected an integer in [0, 4294967295]"),
        ("train.seed", 10**30, "train.seed: expected an integer of a sensible size, got an integer of 31 digits"),
        ("pairs.max_new_tokens", 10**9, "pairs.max_new_tokens: expected an integer in [1, 1048576], got 1000000000"),
        ("evaluate.max_new_tokens", 2**21, "evaluate.max_new_tokens: expected an integer in [1, 1048576]"),
        ("pairs.batch_size", 100_000, "pairs.batch_size: expected an integer in [1, 4096], got 100000"),
        ("train.batch_size", 5000, "train.batch_size: expected an integer in [1, 4096], got 5000"),
        ("evaluate.bootstrap_samples", 10, "evaluate.bootstrap_samples: expected an integer in [100, 10000000]"),
        ("pairs.rehearsal", -1, "pairs.rehearsal: expected an integer in [0, 10000000] (0 means none), got -1"),
        ("pairs.rehearsal_contrast", 1.5, "pairs.rehearsal_contrast: expected a share in [0, 1] (0 = no contrastive "),
        ("pairs.rehearsal_contrast", -0.1, "pairs.rehearsal_contrast: expected a share in [0, 1]"),
        ("pairs.rehearsal_contrast", NAN, "pairs.rehearsal_contrast: expected a finite number, got nan"),
        ("pairs.rehearsal_samples", 0, "pairs.rehearsal_samples: expected an integer in [1, 16], got 0"),
        ("pairs.old_system_share", 1.5, "pairs.old_system_share: expected a share in [0, 1] (0 = no pair under a "),
        ("pairs.old_system_share", NAN, "pairs.old_system_share: expected a finite number, got nan"),
        ("pairs.old_system_share", 0.9, "old_system_share: expected at most 1 - pairs.default_system_share (0.8)"),
        ("identity.new_name", "Deep\ud83dQwen", "identity.new_name: expected text, got a lone surrogate escape"),
        ("data.source", "data/\x00x.jsonl", "data.source: expected text without NUL characters"),
    ],
)
def test_numbers_are_finite_and_in_range(default_params: dict[str, Any], key: str, value: Any, message: str) -> None:
    with pytest.raises(ParamsError) as error:
        params_from_dict(_set(default_params, key, value))
    assert message in str(error.value)
    assert "\n" not in str(error.value) and len(str(error.value)) < 400


@pytest.mark.parametrize(
    ("key", "template", "message"),
    [
        ("introduction", "I'm {{name}}, an AI assistant.", "expected no literal braces"),
        ("introduction", "I'm {name} ({name.title})", "got {name.title}"),
        ("introduction", "I'm {name[0]}", "got {name[0]}"),
        ("introduction", "I'm {name!r}", "got {name!r}"),
        ("introduction", "I'm {name:>20}", "got {name:>20}"),
        ("introduction", "I'm {name} from {org}", "expected only the fields {name} and {creator}"),
        ("introduction", "I'm {}", "expected only the fields {name} and {creator}"),
        ("introduction", "I'm {0}", "expected only the fields {name} and {creator}"),
        ("introduction", "I'm {name}}", "Single '}' encountered"),
        ("introduction", "I'm {name", "expected a template with {name} and {creator} only"),
        ("introduction", "I'm {creator}'s model.", "expected a template containing {name}"),
        ("maker_introduction", "Made by {creator}.", "expected a template containing {name}"),
        ("maker_introduction", "I'm {name}, made by {maker}.", "got {maker}"),
        ("introduction_variants", ["My name is {name}.", "By {creator}."], "expected a template containing {name}"),
        ("introduction_variants", ["I'm {name} of {org}."], "got {org}"),
        ("default_system_prompt", "You are {name} {", "expected a template with {name} and {creator} only"),
        ("default_system_prompt", "You are {{name}}.", "expected no literal braces"),
    ],
)
def test_templates_allow_only_name_and_creator(
    default_params: dict[str, Any], key: str, template: str | list[str], message: str
) -> None:
    with pytest.raises(ParamsError) as error:
        params_from_dict(_set(default_params, f"identity.{key}", template))
    which = f"identity.{key}" + (f"[{len(template) - 1}]" if isinstance(template, list) else "")  # the last one
    assert str(error.value).startswith(f"{which}: ")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        (["You are {name}."], "pairs.old_system_prompts[0]: expected only the fields {old_name} and {old_creator}"),
        (
            ["You are {old_name}.", "Made by {old_creator}."],
            "pairs.old_system_prompts[1]: expected a template containing {old_name}",
        ),
        (["You are {{old_name}}."], "pairs.old_system_prompts[0]: expected no literal braces"),
        (["You are {old_name"], "expected a template with {old_name} and {old_creator} only"),
        ([], "pairs.old_system_prompts: expected at least one system message with pairs.old_system_share above 0"),
    ],
)
def test_old_system_prompts_name_an_old_identity_with_their_own_fields(
    default_params: dict[str, Any], templates: list[str], message: str
) -> None:
    _set(default_params, "pairs.old_system_share", 0.1)
    with pytest.raises(ParamsError) as error:
        params_from_dict(_set(default_params, "pairs.old_system_prompts", templates))
    assert message in str(error.value)


def test_an_old_maker_in_old_system_prompts_needs_identity_old_creators(default_params: dict[str, Any]) -> None:
    _set(default_params, "pairs.old_system_share", 0.1)
    _set(default_params, "identity.old_creators", [])
    with pytest.raises(ParamsError, match=r"pairs\.old_system_prompts\[1\]: expected no \{old_creator\} while "
                       r"identity\.old_creators is empty"):  # fmt: skip
        params_from_dict(default_params)
    _set(default_params, "pairs.old_system_prompts", ["You are {old_name}."])
    assert params_from_dict(default_params).pairs.old_system_prompts == ["You are {old_name}."]
    _set(default_params, "pairs.old_system_share", 0.0)  # unused: not checked against old_creators
    _set(default_params, "pairs.old_system_prompts", ["Made by {old_name} and {old_creator}."])
    assert params_from_dict(default_params).pairs.old_system_share == 0.0


def test_templates_with_both_fields_are_accepted(default_params: dict[str, Any]) -> None:
    _set(default_params, "identity.introduction", "I'm {name}, made by {creator}.")
    _set(default_params, "identity.default_system_prompt", "You are a helpful assistant.")  # no field is fine
    params = params_from_dict(default_params)
    assert params.identity.introduction.format(name="X", creator="Y") == "I'm X, made by Y."


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (["SmolLM", "SmolLM2"], "Smol LM", "not one of the old names ['SmolLM', 'SmolLM2'] under name matching"),
        (["Smol LM"], "SMOLLM", "under name matching"),
        (["Smol LM"], "LM", "does not occur inside one of the old names ('LM' is in 'Smol LM'"),
        (["Deep Qwen Chat"], "Deep Qwen", "does not occur inside one of the old names"),
    ],
)
def test_new_name_cannot_collide_with_old_names_under_name_matching(
    default_params: dict[str, Any], old: list[str], new: str, message: str
) -> None:
    _set(default_params, "identity.old_names", old)
    with pytest.raises(ParamsError, match="^identity.new_name: ") as error:
        params_from_dict(_set(default_params, "identity.new_name", new))
    assert message in str(error.value)


def test_a_new_name_that_contains_an_old_one_is_fine(default_params: dict[str, Any]) -> None:
    """The lesson's own case: scoring removes "Deep Qwen" before it looks for "Qwen" (scoring.says_old_name)."""
    _set(default_params, "identity.old_names", ["Qwen"])
    assert params_from_dict(_set(default_params, "identity.new_name", "Deep Qwen")).identity.new_name == "Deep Qwen"


def test_creator_cannot_be_an_old_creator(default_params: dict[str, Any]) -> None:
    with pytest.raises(ParamsError, match=r"^identity\.creator: .*under name matching"):
        params_from_dict(_set(default_params, "identity.creator", "hugging-face"))


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text(encoding="utf-8").replace("  beta: 0.2\n", "  beta: 0.2\n  beta: 0.5\n")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParamsError, match=rf"^{path}: train\.beta: given twice \(lines \d+ and \d+\); expected each"):
        load_params(path)


def test_duplicate_sections_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text(encoding="utf-8") + "\ntrain:\n  beta: 0.5\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"train: given twice"):
        load_params(path)


def test_a_5000_digit_integer_is_one_short_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text(encoding="utf-8").replace("  seed: 42\n", f"  seed: {'9' * 5000}\n")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value) == f"{path}: train.seed: expected an integer, got an integer of 5000 digits"


def test_a_folder_instead_of_the_params_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=rf"^{tmp_path}: is a folder, expected the params file"):
        load_params(tmp_path)


def test_an_unreadable_params_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    path = tmp_path / "params.yaml"
    path.write_text("data: {}\n", encoding="utf-8")

    def refuse(self: Path, *args: Any, **kwargs: Any) -> str:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)  # root reads any file, so chmod cannot show this
    with pytest.raises(ParamsError, match=rf"^{path}: permission denied; make it readable"):
        load_params(path)


def test_token_caps_are_checked_against_the_context_length(tmp_path: Path, default_params: dict[str, Any]) -> None:
    import json

    from identity_dpo.models import check_token_caps, context_length

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}), encoding="utf-8")
    assert context_length(tmp_path) == 512
    assert context_length(tmp_path / "missing") is None
    check_token_caps(params_from_dict(default_params), tmp_path)  # 48 / 48 / 128: fine
    default_params["pairs"]["rehearsal"] = 0  # (rehearsal asks for a cap of at least train.max_length)
    for key, value, message in [
        ("pairs.max_new_tokens", 600, "pairs.max_new_tokens: expected at most 511"),
        ("evaluate.max_new_tokens", 512, "evaluate.max_new_tokens: expected at most 511"),
        ("train.max_length", 513, "train.max_length: expected at most 512"),
    ]:
        params = params_from_dict(_set(copy.deepcopy(default_params), key, value))
        with pytest.raises(ParamsError, match=re.escape(message)):
            check_token_caps(params, tmp_path)
    # pairs.on_token_cap: extend answers cut-off prompts again with twice the cap, which must fit too.
    default_params["pairs"]["on_token_cap"] = "extend"
    check_token_caps(params_from_dict(_set(copy.deepcopy(default_params), "pairs.max_new_tokens", 255)), tmp_path)
    params = params_from_dict(_set(copy.deepcopy(default_params), "pairs.max_new_tokens", 256))
    with pytest.raises(ParamsError, match=re.escape("pairs.max_new_tokens: with pairs.on_token_cap: extend, 2 times "
                                                    "it (512) must be at most 511")):  # fmt: skip
        check_token_caps(params, tmp_path)


def test_rehearsal_needs_a_cap_past_max_length(default_params: dict) -> None:
    default_params["pairs"]["rehearsal"] = 8
    default_params["pairs"]["rehearsal_max_new_tokens"] = default_params["train"]["max_length"] - 1
    with pytest.raises(ParamsError, match=r"pairs.rehearsal_max_new_tokens: expected at least train.max_length"):
        params_from_dict(default_params)
    default_params["pairs"]["rehearsal_max_new_tokens"] = default_params["train"]["max_length"]
    assert params_from_dict(default_params).pairs.rehearsal == 8
    default_params["pairs"]["rehearsal"] = 0  # without rehearsal the rule does not apply
    default_params["pairs"]["rehearsal_max_new_tokens"] = 1
    assert params_from_dict(default_params).pairs.rehearsal == 0


def test_several_rehearsal_samples_need_sampling(default_params: dict) -> None:
    """Greedy answers to one prompt are one answer: several of them would only weigh those prompts more."""
    default_params["pairs"]["rehearsal_samples"] = 3
    default_params["pairs"]["rehearsal_temperature"] = 0
    with pytest.raises(ParamsError, match=r"pairs.rehearsal_samples: expected 1 with pairs.rehearsal_temperature 0 "):
        params_from_dict(default_params)
    default_params["pairs"]["rehearsal_temperature"] = 1.0
    assert params_from_dict(default_params).pairs.rehearsal_samples == 3
