"""The CPU speed work, behind one switch and a gate on the library versions it was tested with.

Each kernel (a module of this package) replaces or patches an internal of torch, transformers, TRL, PEFT or gguf
with a faster path that computes what the library's own path computes; docs/upgrading.md lists every internal
touched, where, and the test that guards it, and docs/speed-history.md what each kernel gained.

The switch is params.yaml's `cpu_kernels`: a stage that runs kernels sets it for its process (`configure`), and
the functions that run them (train_dpo, generate, fetch_model) also take it per call. `auto` runs each kernel
where it applies; `none` runs the plain library path everywhere. The callers ask `active(kernel, device)` and
call the library as it is when the answer is no; no other module uses a kernel module's private names.

Where it applies: on the devices the kernel was written for (the training kernels on a CPU only), and only with
the library versions in TESTED_WITH, because a kernel relies on internals a new release may change without
notice. With another installed version, the kernels that rely on that library run the plain path, which stays
correct, and the process says so once per library on stderr.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast, get_args

from identity_dpo.params import CpuKernels

# The releases whose internals the kernels were checked against (tests/test_cpu_kernels.py checks that these are
# requirements.txt's pins). After bumping a pin: docs/upgrading.md.
TESTED_WITH = {
    "torch": "2.13.0",
    "transformers": "5.23.0",
    "trl": "1.16.0",
    "peft": "0.21.2",
    "gguf": "0.19.0",
}


@dataclass(frozen=True)
class Kernel:
    libraries: tuple[str, ...]  # whose internals it relies on: each must be installed at its TESTED_WITH version
    cpu_only: bool  # True: runs only where the work runs on a CPU (a GPU has kernels of its own for the same job)


KERNELS = {
    "answer_head": Kernel(("torch", "transformers", "trl"), cpu_only=True),  # answer_head.py
    "shared_prompt": Kernel(("torch", "transformers", "trl"), cpu_only=True),  # shared_prompt.py
    "fused_lora": Kernel(("torch", "peft"), cpu_only=True),  # fused_lora.py
    "fused_norm": Kernel(("torch", "transformers"), cpu_only=True),  # fused_norm.py
    "sdpa_gqa": Kernel(("torch", "transformers"), cpu_only=True),  # sdpa_gqa.py
    "sdpa_backward": Kernel(("torch", "transformers"), cpu_only=True),  # sdpa_backward.py
    "malloc": Kernel((), cpu_only=False),  # malloc.py: glibc's allocator serves the host, whatever device trains
    "decoding": Kernel(("torch", "transformers"), cpu_only=False),  # decoding.py: the same tokens on any device
    "gguf_reader": Kernel(("gguf", "transformers"), cpu_only=False),  # gguf_reader.py: reading a file
}

_setting: CpuKernels = "auto"  # the process's switch; stages set it from params.yaml
_tested: dict[str, bool] = {}  # library -> whether its installed version is the tested one (looked up once)


def configure(setting: CpuKernels) -> None:
    """Set the switch for this process: `auto` or `none` (params.yaml's cpu_kernels)."""
    global _setting
    _setting = _valid(setting)


def current() -> CpuKernels:
    """The process's switch."""
    return _setting


@contextmanager
def configured(setting: CpuKernels) -> Iterator[None]:
    """The switch set to `setting` for a block, then back to what it was."""
    before = _setting
    configure(setting)
    try:
        yield
    finally:
        configure(before)


def active(kernel: str, device: Any, setting: CpuKernels | None = None) -> bool:
    """Whether `kernel` runs for work on `device` (a torch.device or its type name) under `setting` (None: the
    process's switch); when not, the caller runs the plain library path."""
    spec = KERNELS[kernel]
    if _valid(_setting if setting is None else setting) == "none":
        return False
    if spec.cpu_only and getattr(device, "type", device) != "cpu":
        return False
    return all(_is_tested(library) for library in spec.libraries)


def installed_version(library: str) -> str | None:
    """The installed version of `library` without its local build label (torch's +cpu), or None when missing."""
    try:
        return importlib.metadata.version(library).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None


def _is_tested(library: str) -> bool:
    if library not in _tested:
        installed, tested = installed_version(library), TESTED_WITH[library]
        _tested[library] = installed == tested
        if installed != tested:
            kernels = ", ".join(name for name, spec in KERNELS.items() if library in spec.libraries)
            found = "is not installed" if installed is None else f"{installed} is installed"
            print(
                f"cpu_kernels: warning: {library} {found}, the CPU kernels were tested with {tested}: {kernels} run "
                "the plain library path (docs/upgrading.md says how to check a new version)",
                file=sys.stderr,
            )
    return _tested[library]


def _valid(setting: str) -> CpuKernels:
    allowed = get_args(CpuKernels)
    if setting not in allowed:
        raise ValueError(f"cpu_kernels: expected one of {', '.join(allowed)}, got {setting!r}")
    return cast(CpuKernels, setting)
