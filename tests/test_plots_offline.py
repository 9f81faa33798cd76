"""`dvc plots diff` pages render with no network: Vega is inlined by .dvc/plots/offline.html.

Two revisions of the committed results are compared with `dvc plots diff`, the page is opened
in headless Chromium with every host unresolvable, and the screenshot must show every plot.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from pipeline_copy import ROOT, make_copy, run
from system_programs import CHROMIUM, require

RESULTS = ("metrics/train", "metrics/eval_plots", "metrics/eval.json", "dvc.lock")
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium that cannot reach any host: a page that needs a CDN stays blank."""
    command = [
        require(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", '--host-resolver-rules=MAP * ~NOTFOUND', "--virtual-time-budget=10000",
        *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def plots_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dvc plots diff` of two revisions whose results differ, as an offline HTML page."""
    project = make_copy(tmp_path_factory.mktemp("plots") / "project")
    for name in RESULTS:
        source, dest = ROOT / name, project / name
        if source.exists():
            shutil.copytree(source, dest) if source.is_dir() else shutil.copy2(source, dest)
        else:  # a `dvc repro` under way in this checkout removed the stage's outputs: the committed ones
            committed = subprocess.run(["git", "archive", "HEAD", name], cwd=ROOT, capture_output=True, check=True)
            with tarfile.open(fileobj=io.BytesIO(committed.stdout)) as archive:
                archive.extractall(project, filter="data")
    run(project, ["git", "add", "-A"])
    run(project, [*GIT, "commit", "-qm", "results"])
    rates = project / "metrics/eval_plots/identity_rates.json"
    rows = json.loads(rates.read_text())
    rows[0]["rate"] = 0.5  # a second "experiment" with a visibly different result
    rates.write_text(json.dumps(rows))
    out = project / "plots-page"
    run(project, ["dvc", "plots", "diff", "HEAD", "-o", str(out)])
    return out / "index.html"


def test_page_carries_vega_and_loads_nothing_from_the_network(plots_page: Path) -> None:
    html = plots_page.read_text()
    assert not re.search(r"<script[^>]+src=", html), "the page loads a script from elsewhere"
    assert "cdn.jsdelivr" not in html
    for library in ("vega@5.", "vega-lite@5.", "vega-embed@6."):
        assert library in html
    assert html.count("vegaEmbed(") == 5, "one embedded chart per plot in dvc.yaml"
    assert '"rev": "workspace"' in html and '"rev": "HEAD"' in html, "both revisions are plotted"


def test_every_plot_renders_offline_in_chromium(plots_page: Path, tmp_path: Path) -> None:
    dom = chromium("--dump-dom", plots_page.as_uri(), profile=tmp_path / "dom").stdout
    assert dom.count('class="marks"') == 5, "Vega drew fewer charts than dvc.yaml declares"


def test_screenshot_shows_the_plots(plots_page: Path, tmp_path: Path) -> None:
    from PIL import Image

    screenshot = tmp_path / "plots.png"
    chromium("--window-size=1200,1400", f"--screenshot={screenshot}", plots_page.as_uri(), profile=tmp_path / "shot")
    image = Image.open(screenshot).convert("L")
    # A blank page is all white; drawn charts put axes, labels, lines and bars on a good share of it.
    inked = sum(count for level, count in enumerate(image.histogram()) if level < 200)
    share = inked / (image.width * image.height)
    assert share > 0.02, f"only {share:.1%} of the screenshot is drawn: a blank page?"
    colours = Image.open(screenshot).convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "a flat page, not charts"
