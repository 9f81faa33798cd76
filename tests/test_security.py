"""Security: no remote code, safetensors only, pinned hub sources, no secrets in the repository or the logs.

The code is checked by reading it (every `from_pretrained` call, every loader of pickles), and the
behaviour by booby-trapped inputs: a pickle file and a model repository's own Python code that would
leave a marker file behind if anything ever ran them.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from identity_dpo.errors import SourceError
from identity_dpo.models import fetch_model, load_model
from identity_dpo.sources import parse_source

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("src", "stages", "scripts")
COMMIT = "7ae557604adf67be50417f59c2c2f167def9a775"


def _python_files() -> list[Path]:
    return sorted(p for folder in CODE_DIRS for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.Call)]


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def test_no_code_ever_enables_remote_code() -> None:
    offenders = []
    for path in _python_files():
        for call in _calls(path):
            for keyword in call.keywords:
                if keyword.arg == "trust_remote_code" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert offenders == []


def test_local_weights_are_loaded_as_safetensors_only_and_nothing_unpickles() -> None:
    """Every model loaded from a folder asks for safetensors; no torch.load / pickle.load anywhere."""
    loads, unsafe = [], []
    for path in _python_files():
        for call in _calls(path):
            name = _name(call)
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            if name in {"load", "loads", "Unpickler"} and isinstance(call.func, ast.Attribute):
                owner = call.func.value
                if isinstance(owner, ast.Name) and owner.id in {"torch", "pickle", "dill", "joblib", "cloudpickle"}:
                    unsafe.append(where)
            if name == "from_pretrained" and isinstance(call.func.value, ast.Name) and "Model" in call.func.value.id:
                keywords = {k.arg: k.value for k in call.keywords}
                gguf = "gguf_file" in keywords  # a GGUF file is parsed by the gguf reader, never unpickled
                safe = isinstance(keywords.get("use_safetensors"), ast.Constant) and keywords["use_safetensors"].value
                loads.append(where)
                if not (gguf or safe):
                    unsafe.append(where)
    assert loads, "no model loading found: the check reads the wrong files"
    assert unsafe == []


@pytest.fixture
def trap(tmp_path: Path) -> Path:
    """The file a booby-trapped pickle or module would create when run."""
    return tmp_path / "code-was-run"


def _pickle_bomb(path: Path, marker: Path) -> None:
    class Bomb:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(Bomb()))


def test_pickle_weights_next_to_safetensors_are_never_read(tmp_path: Path, tiny_model_dir: Path, trap: Path) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    _pickle_bomb(folder / "pytorch_model.bin", trap)
    fetch_model(str(folder), tmp_path / "out")
    assert not trap.exists(), "a pickle was unpickled"
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.suffix in (".bin", ".pt", ".pkl")]


def test_a_pickle_only_folder_is_refused_without_unpickling(tmp_path: Path, tiny_model_dir: Path, trap: Path) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (folder / "model.safetensors").unlink()
    _pickle_bomb(folder / "pytorch_model.bin", trap)
    with pytest.raises(SourceError, match=r"only pickle weights \(pytorch_model\.bin\).*convert them to safetensors"):
        fetch_model(str(folder), tmp_path / "out")
    assert not trap.exists()
    assert not (tmp_path / "out").exists()


def test_a_model_that_needs_its_own_code_is_refused_without_running_it(
    tmp_path: Path, tiny_model_dir: Path, trap: Path
) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (folder / "modeling_custom.py").write_text(f"open({str(trap)!r}, 'w').close()\n", encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["model_type"] = "custom_identity_test"
    config["auto_map"] = {"AutoConfig": "modeling_custom.Config", "AutoModelForCausalLM": "modeling_custom.Model"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(SourceError, match=r"model\.source: cannot load the model in .*model: it needs custom code"):
        load_model(folder, "model.source")
    assert not trap.exists(), "the model repository's code was run"


@pytest.mark.parametrize(
    ("spec", "warning"),
    [
        ("hf:Qwen/Qwen2.5-0.5B-Instruct", "is not pinned to a revision"),
        ("hf:Qwen/Qwen2.5-0.5B-Instruct@main", "names the revision 'main', a branch or tag that can move"),
        ("hf:Qwen/Qwen2.5-0.5B-Instruct@v1.0", "names the revision 'v1.0', a branch or tag that can move"),
        (f"hf:Qwen/Qwen2.5-0.5B-Instruct@{COMMIT}", None),
    ],
)
def test_hub_sources_should_be_pinned_to_a_commit(spec: str, warning: str | None) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parse_source(spec, "model.source", allowed=("hf", "pypi", "local"))
    messages = [str(w.message) for w in caught]
    if warning is None:
        assert messages == []
    else:
        assert len(messages) == 1 and warning in messages[0] and f"model.source: {spec}" in messages[0]


# Patterns of real credentials (not of the words "token" or "password", which the code may well use).
SECRETS = {
    "Hugging Face token": r"hf_[A-Za-z0-9]{30,}",
    "GitHub token": r"gh[pousr]_[A-Za-z0-9]{36,}",
    "AWS access key": r"AKIA[0-9A-Z]{16}",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "OpenAI-style key": r"sk-[A-Za-z0-9]{32,}",
    "URL with a password": r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s:@'\"]{3,}@",
}


def test_no_secrets_in_the_repository() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    found = []
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        for what, pattern in SECRETS.items():
            for match in re.finditer(pattern, text):
                found.append(f"{name}: {what} ({match.group()[:12]}...)")
    assert found == []


def test_the_secret_patterns_would_find_a_token() -> None:
    fake = "hf_" + "a1B2" * 9
    assert re.search(SECRETS["Hugging Face token"], f"HF_TOKEN={fake}")
    # Split in two, so the scan of the repository does not find this very line.
    assert re.search(SECRETS["URL with a password"], "https://user:" + "s3cret@example.com/repo")


def test_a_token_in_the_environment_never_reaches_the_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A failing hub load with a token set: neither the message nor anything printed shows the token."""
    token = "hf_" + "Zq9" * 12
    old = {k: os.environ.get(k) for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    os.environ.update(HF_TOKEN=token, HUGGING_FACE_HUB_TOKEN=token)
    try:
        with pytest.raises(SourceError) as error:  # conftest turns the hub off
            fetch_model(f"hf:Qwen/Qwen2.5-0.5B-Instruct@{COMMIT}", tmp_path / "out")
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    printed = capsys.readouterr()
    assert "cannot load hf:Qwen/Qwen2.5-0.5B-Instruct" in str(error.value)
    assert token not in str(error.value) + printed.out + printed.err
