"""Where data and models come from: `hf:OWNER/NAME@REVISION`, `pypi:PACKAGE==VERSION`, or a local path."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from identity_dpo.errors import SourceError

SourceKind = Literal["hf", "pypi", "local"]

_HF = re.compile(r"^hf:(?P<name>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
_PYPI = re.compile(r"^pypi:(?P<name>[A-Za-z0-9][\w.-]*)==(?P<revision>[\w.+!-]+)$")
_SCHEME = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*):(?!\\)")  # "C:\..." is a Windows path, not a scheme


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    name: str  # hub repo id, PyPI package name, or local path
    revision: str | None = None  # hub revision or PyPI version

    def __str__(self) -> str:
        if self.kind == "hf":
            return f"hf:{self.name}" + (f"@{self.revision}" if self.revision else "")
        if self.kind == "pypi":
            return f"pypi:{self.name}=={self.revision}"
        return self.name


def parse_source(spec: str, key: str, *, allowed: tuple[SourceKind, ...]) -> Source:
    """Parse a source string from params; `key` names the param in error messages."""
    spec = spec.strip()
    if match := _HF.match(spec):
        source = Source("hf", match["name"], match["revision"])
        if source.revision is None:
            warnings.warn(
                f"{key}: {spec} is not pinned to a revision; results may change when the hub repo does "
                f"(write {spec}@<commit or tag>)",
                stacklevel=2,
            )
    elif match := _PYPI.match(spec):
        source = Source("pypi", match["name"], match["revision"])
    elif (match := _SCHEME.match(spec)) and not Path(spec).exists():
        scheme = match["scheme"]
        if scheme in ("hf", "pypi"):
            form = "hf:OWNER/NAME@REVISION" if scheme == "hf" else "pypi:PACKAGE==VERSION"
            raise SourceError(f"{key}: {spec!r} is malformed; expected {form}")
        raise SourceError(f"{key}: unknown source scheme {scheme!r} in {spec!r}; expected {_forms(allowed)}")
    else:
        source = Source("local", spec)
    if source.kind not in allowed:
        raise SourceError(f"{key}: {source.kind} sources are not supported here; expected {_forms(allowed)}")
    return source


def _forms(allowed: tuple[SourceKind, ...]) -> str:
    forms = {"hf": "hf:OWNER/NAME@REVISION", "pypi": "pypi:PACKAGE==VERSION", "local": "a local path"}
    return " or ".join(forms[kind] for kind in allowed)


def hub_unreachable(source: Source, key: str, exc: BaseException, offline_hint: str) -> SourceError:
    """The error for a hub source that cannot be fetched, with the offline alternatives."""
    return SourceError(
        f"{key}: cannot load {source} from the Hugging Face Hub ({type(exc).__name__}: {' '.join(str(exc).split())}). "
        f"Without network access, use {offline_hint}."
    )
