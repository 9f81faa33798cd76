"""Where data and models come from: `hf:OWNER/NAME@REVISION`, `pypi:PACKAGE==VERSION`, or a local path."""

from __future__ import annotations

import os
import re
import socket
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from identity_dpo.errors import SourceError

SourceKind = Literal["hf", "pypi", "local"]

_HF = re.compile(r"^hf:(?P<name>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
_PYPI = re.compile(r"^pypi:(?P<name>[A-Za-z0-9][\w.-]*)==(?P<revision>[\w.+!-]+)$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")  # a hub commit: the only revision that cannot move
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
                f"(write {spec}@<commit>)",
                stacklevel=2,
            )
        elif not _COMMIT.match(source.revision):
            warnings.warn(
                f"{key}: {spec} names the revision {source.revision!r}, a branch or tag that can move; results may "
                "change when it does (pin the 40-character commit it points to)",
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


_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def check_hub_reachable(key: str, timeout: float = 5.0) -> None:
    """Without a network, switch the Hugging Face libraries to their local cache instead of retrying.

    huggingface_hub retries an unreachable hub for about a minute before it gives up. One TCP
    connection tells at once; when it fails, offline mode makes the libraries use what their cache
    holds and fail immediately (with the message of `hub_unreachable`) when it holds nothing.
    Skipped when offline mode is already on, or when a proxy is configured (only it can tell).
    """
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or any(os.environ.get(var) for var in _PROXY_VARS):
        return
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        print(f"{key}: cannot reach {host}:{port} ({exc}); using the local Hugging Face cache only", file=sys.stderr)
        _go_offline()


def _go_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    # The libraries read these at import; if they are already imported, set their copies too.
    if (constants := sys.modules.get("huggingface_hub.constants")) is not None:
        constants.HF_HUB_OFFLINE = True
    if (config := sys.modules.get("datasets.config")) is not None:
        config.HF_HUB_OFFLINE = True
        config.HF_DATASETS_OFFLINE = True


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}
