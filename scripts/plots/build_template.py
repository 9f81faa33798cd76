"""Write .dvc/plots/offline.html: DVC's plots page with Vega inlined, so it renders with no network.

`dvc plots show/diff` pages load vega, vega-lite and vega-embed from a CDN by default; offline they
are blank. `.dvc/config` names this file as `plots.html_template`, so plain `dvc plots diff` writes
pages that carry the libraries themselves. The versions are pinned in package.json / package-lock.json
next to this script; rebuild after changing them with `bash scripts/plots/build_template.sh`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parents[1] / ".dvc" / "plots" / "offline.html"
# UMD builds, in load order: vega-embed binds to the vega and vegaLite globals.
LIBRARIES = ("vega", "vega-lite", "vega-embed")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>identity-dpo plots</title>
    <!-- {notice} -->
{libraries}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def library_script(node_modules: Path, name: str) -> tuple[str, str]:
    package = json.loads((node_modules / name / "package.json").read_text(encoding="utf-8"))
    code = (node_modules / name / "build" / f"{name}.min.js").read_text(encoding="utf-8")
    if "</script" in code.lower():
        raise SystemExit(f"{name}: the build contains '</script' and cannot be inlined")
    version = f"{name}@{package['version']} ({package['license']})"
    return version, f"    <script>/* {version} */\n{code}\n    </script>"


def main() -> None:
    node_modules = HERE / "node_modules"
    if not node_modules.is_dir():
        raise SystemExit(f"{node_modules}: missing; run `npm ci` in {HERE} first (build_template.sh does)")
    versions, scripts = zip(*(library_script(node_modules, name) for name in LIBRARIES), strict=True)
    notice = "Inlined for offline rendering: " + ", ".join(versions) + ". Built by scripts/plots/build_template.py."
    # {refresh_tag} and {plot_divs} stay placeholders for DVC; doubled braces keep the CSS literal.
    page = PAGE.format(
        refresh_tag="{refresh_tag}", plot_divs="{plot_divs}", notice=notice, libraries="\n".join(scripts)
    )
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    tmp = TEMPLATE.with_name(f".tmp-{TEMPLATE.name}")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(TEMPLATE)
    print(f"wrote {TEMPLATE} ({TEMPLATE.stat().st_size // 1024} KiB): {', '.join(versions)}", file=sys.stderr)


if __name__ == "__main__":
    main()
