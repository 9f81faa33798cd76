from __future__ import annotations

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
        ("train.beta", 0, "train.beta: expected a number > 0"),
        ("train.beta", -0.1, "train.beta: expected a number > 0"),
        ("train.beta", "high", "train.beta: expected a number, got str 'high'"),
        ("train.learning_rate", 0.0, "train.learning_rate: expected a number > 0"),
        ("train.batch_size", 2.5, "train.batch_size: expected an integer, got float 2.5"),
        ("train.batch_size", True, "train.batch_size: expected an integer, got bool True"),
        ("train.epochs", 0, "train.epochs: expected a number > 0"),
        ("train.max_length", 8, "train.max_length: expected an integer >= 16"),
        ("train.loss_type", ["sigmoid", "nll"], "train.loss_type[1]: expected one of sigmoid"),
        ("train.loss_weights", [1.0], "train.loss_weights: expected one weight per loss type (2), got 1"),
        ("train.precompute_ref_log_probs", "yes", "train.precompute_ref_log_probs: expected true or false"),
        ("identity.new_name", "", "identity.new_name: expected a non-empty name"),
        ("identity.new_name", "smollm", "identity.new_name: expected a name that is not one of the old names"),
        ("identity.old_names", [], "identity.old_names: expected at least one name"),
        ("identity.old_names", "SmolLM", "identity.old_names: expected a list of strings, got str 'SmolLM'"),
        ("identity.introduction", "Hello!", "identity.introduction: expected a template containing {name}"),
        ("identity.rewrite", "name", "identity.rewrite: expected one of names, self_description, introduction"),
        ("pairs.max_new_tokens", 0, "pairs.max_new_tokens: expected an integer >= 1"),
        ("pairs.max_prompts", -1, "pairs.max_prompts: expected an integer >= 0"),
        ("data.on_bad_row", "ignore", "data.on_bad_row: expected one of skip, fail, got 'ignore'"),
        ("data.source", None, "data.source: expected a string, got nothing (null)"),
        ("evaluate.batch_size", 0, "evaluate.batch_size: expected an integer >= 1"),
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
    params = params_from_dict(default_params)
    assert params.identity.rewrite == "self_description"
    assert params.train.warmup_ratio == 0.0


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
    with pytest.raises(ParamsError, match=rf"^{path}: train\.beta: expected a number > 0$"):
        load_params(path)
