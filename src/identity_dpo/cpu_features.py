"""Which bf16 matrix instructions this CPU has: bf16 training on a CPU pays off only where they are native.

Without them (e.g. an AVX2-only CPU) torch converts bf16 to fp32 and back around every product, which is slower than
fp32 training, so train.precision refuses bf16 there (launch.py).
"""

from __future__ import annotations

from pathlib import Path

# Native bf16 matrix instructions, the faster first: Intel's AMX tiles, then AVX-512's bf16 dot products.
NATIVE_BF16 = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def native_bf16_feature() -> str | None:
    """The CPU's native bf16 matrix instruction set (one of NATIVE_BF16, named as Linux and torch name it), or None."""
    flags = _cpu_flags()
    return next((feature for feature in NATIVE_BF16 if feature in flags), None)


def _cpu_flags() -> set[str]:
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch's public view of cpuinfo, on any OS
    if capabilities is not None:
        return {name for name, value in capabilities().items() if value is True}
    try:  # an older torch: the kernel's own list (Linux)
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
