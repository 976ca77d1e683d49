"""The book as a reader meets it: notebooks execute on the smoke profile, the site builds from
those executions, and headless Chromium renders every chapter with its figures and tables."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("book_tool", ROOT / "tools" / "book.py")
book_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(book_tool)

CHAPTERS = [p.stem for p in book_tool.notebook_sources()]


def test_no_notebook_is_committed_with_outputs():
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert tracked == [], f"commit notebooks as jupytext MyST .md only, found {tracked}"
    for source in book_tool.notebook_sources():
        text = source.read_text()
        assert "format_name: myst" in text, f"{source} is not a jupytext MyST notebook"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_first_code_cell_is_the_parameters_cell(chapter):
    import jupytext

    notebook = jupytext.read(ROOT / "notebooks" / f"{chapter}.md")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code, f"{chapter} has no code cell"
    assert "parameters" in code[0].metadata.get("tags", []), f"{chapter}: first code cell not tagged"
    assert re.search(r"^profile\s*=", code[0].source, re.M), f"{chapter}: no profile parameter"
    for cell in notebook.cells:
        assert not cell.get("outputs"), f"{chapter} carries outputs"


#: The longest line of code a reader sees: what fits the site's text column in a 1300 px window.
VISIBLE_LINE_LENGTH = 88
#: The longest function a notebook may define; anything longer belongs in wsolkit, with tests.
NOTEBOOK_FUNCTION_LINES = 4


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_visible_code_fits_the_page_and_notebooks_define_no_protocol(chapter):
    import ast

    import jupytext

    notebook = jupytext.read(ROOT / "notebooks" / f"{chapter}.md")
    too_long, functions = [], []
    for number, cell in enumerate(c for c in notebook.cells if c.cell_type == "code"):
        tags = cell.metadata.get("tags", [])
        if "remove-input" not in tags and "remove-cell" not in tags:
            too_long += [(number, line) for line in cell.source.splitlines()
                         if len(line) > VISIBLE_LINE_LENGTH]
        source = "\n".join(line for line in cell.source.splitlines()
                           if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                length = node.end_lineno - node.lineno + 1
                if length > NOTEBOOK_FUNCTION_LINES:
                    functions.append(f"code cell {number}: {node.name} ({length} lines)")
    assert not too_long, (f"{chapter}: visible code lines over {VISIBLE_LINE_LENGTH} characters "
                          f"(code cell, line): {too_long}")
    assert not functions, (f"{chapter} defines functions of more than "
                           f"{NOTEBOOK_FUNCTION_LINES} lines; move them into wsolkit: {functions}")


def test_training_progress_reaches_the_terminal_with_what_is_left(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(book_tool, "PROGRESS_EVERY", 0.0)
    progress = tmp_path / "progress.jsonl"
    printer = book_tool._ProgressPrinter(progress, book_minutes=10.0)
    printer.start()
    lines = [{"run": "00_cam_baseline-cam-s0", "epoch": e, "epochs": 4, "images_per_s": 1500.0,
              "seconds": 2.0 * (e - 2), "start_epoch": 2} for e in (3, 4)]
    progress.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"run": "half')
    printer.stop.set()
    printer.join()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("[book]   00_cam_baseline-cam-s0: epoch 3/4, 1500 images/s, "
                      "~0.0 min left for this run, ~10 min for the book")
    assert out[1].startswith("[book]   00_cam_baseline-cam-s0: epoch 4/4, 1500 images/s, trained")
    assert len(out) == 2  # the half-written line waits for its end


def test_the_estimate_uses_the_fp32_record_where_training_runs_in_fp32(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reference = json.loads(book_tool.REFERENCE_MINUTES.read_text())
    monkeypatch.setenv("WSOL_NATIVE_BF16", "0")
    fp32 = book_tool._minutes_on_record(tmp_path, "default")
    monkeypatch.setenv("WSOL_NATIVE_BF16", "1")
    bf16 = book_tool._minutes_on_record(tmp_path, "default")
    assert bf16 == reference["default"]
    assert fp32 == {**reference["default"], **reference["default:fp32"]}
    assert all(fp32[k] > bf16[k] for k in reference["default:fp32"])
    # This machine's own record wins over both.
    (tmp_path / ".00_cam_baseline.minutes").write_text("3.5\n")
    assert book_tool._minutes_on_record(tmp_path, "default")["00_cam_baseline"] == 3.5


def test_unknown_profile_is_refused_with_the_choices():
    with pytest.raises(SystemExit, match="expected one of"):
        book_tool.execute("fast", ROOT / "_build" / "never")


@pytest.fixture(scope="session")
def smoke_site(tmp_path_factory):
    """Executes every notebook on the smoke profile (fresh run cache) and builds the site."""
    work = tmp_path_factory.mktemp("book")
    executed = work / "executed"
    mp = pytest.MonkeyPatch()
    mp.setenv("WSOL_RUNS_DIR", str(work / "runs"))
    try:
        notebooks = book_tool.execute("smoke", executed, force=True)
    finally:
        mp.undo()
    html = book_tool.build(executed, work / "site")
    return notebooks, html


@pytest.mark.notebooks
def test_every_notebook_executes_on_smoke_without_errors(smoke_site):
    notebooks, _ = smoke_site
    assert [n.stem for n in notebooks] == CHAPTERS
    for notebook in notebooks:
        nb = json.loads(notebook.read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{notebook.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
        images = [o for c in nb["cells"] for o in c.get("outputs", [])
                  if "image/png" in o.get("data", {})]
        assert images, f"{notebook.name} produced no figure"


@pytest.mark.notebooks
def test_every_chapters_sliders_draw_in_a_live_kernel(smoke_site, monkeypatch):
    """Each chapter again in a kernel that stays up (runs from the smoke cache), then every
    slider moved to its ends: each move must redraw the figure."""
    import nbformat
    from nbclient import NotebookClient

    notebooks, _ = smoke_site
    monkeypatch.setenv("WSOL_RUNS_DIR", str(notebooks[0].parent.parent / "runs"))
    for executed in notebooks:
        nb = nbformat.read(executed, as_version=4)
        drawn_at_once = [o for c in nb.cells if "live_sliders" in c.source for o in c.outputs
                         if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert drawn_at_once, f"{executed.name}: no slider widget in the executed notebook"
        nb.cells.append(nbformat.v4.new_code_cell(
            "import json\nfrom wsolkit import viz\nprint(json.dumps(viz.exercise_sliders()))"))
        NotebookClient(nb, kernel_name="python3", timeout=900,
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
        report = json.loads(nb.cells[-1].outputs[0]["text"])
        assert report, f"{executed.name}: no slider group was made"
        for group in report:
            assert group["moves"] > 0 and group["figures"] == group["moves"], (executed.name, group)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is needed to test the built site: `apt-get install chromium` "
                "(CI installs it in .ci/run)")


def _render(url: str, screenshot: Path | None = None, width: int = 1280) -> str:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--virtual-time-budget=5000", f"--window-size={width},2400"]
    if screenshot is not None:
        subprocess.run(command + [f"--screenshot={screenshot}", url], capture_output=True,
                       timeout=120, check=True)
    result = subprocess.run(command + ["--dump-dom", url], capture_output=True, text=True,
                            timeout=120, check=True)
    return result.stdout


@pytest.mark.browser
def test_site_renders_every_page_in_chromium(smoke_site):
    _, html = smoke_site
    index = _render((html / "index.html").as_uri())
    assert "wsolbook" in index
    for page in ("book/datasets", "book/metrics", "book/reproduce"):
        dom = _render((html / f"{page}.html").as_uri())
        assert "<h1" in dom, f"{page} has no title"
    # The formulas are typeset by a MathJax copy inside the site: no network needed.
    metrics = _render((html / "book" / "metrics.html").as_uri())
    assert "<mjx-container" in metrics, "the metrics page's formulas were not typeset"
    for chapter in CHAPTERS:
        page = html / "notebooks" / f"{chapter}.html"
        assert page.exists(), f"the site has no page for {chapter}"
        dom = _render(page.as_uri(), screenshot=html.parent / f"{chapter}.png")
        figures = re.findall(r"<img[^>]+src=\"[^\"]+\.png\"", dom)
        assert len(figures) >= 2, f"{chapter}: {len(figures)} figures rendered"
        assert "<table" in dom, f"{chapter}: no table rendered"
        for marker in ("Traceback (most recent call last)", "output_error", "stderr"):
            assert marker not in dom, f"{chapter}: the page shows {marker!r}"
        overflowing = _overflowing_code(page)
        assert not overflowing, (f"{chapter}: visible code cells run past the text column of a "
                                 f"1300 px window (cell, longest line): {overflowing}")


# Reports, in the rendered page itself, every code cell wider than its box.
_OVERFLOW_SCRIPT = """<script>
window.addEventListener('load', function () {
  var rows = [];
  document.querySelectorAll('div.cell_input pre').forEach(function (pre, i) {
    if (pre.scrollWidth > pre.clientWidth + 1) {
      var lines = pre.textContent.split('\\n');
      var longest = Math.max.apply(null, lines.map(function (l) { return l.length; }));
      rows.push(i + ':' + longest);
    }
  });
  var out = document.createElement('div');
  out.id = 'overflow-report';
  out.textContent = 'overflow[' + rows.join(' ') + ']';
  document.body.appendChild(out);
});
</script>"""


def _overflowing_code(page: Path) -> list[str]:
    probe = page.with_name(f"_overflow_{page.name}")
    probe.write_text(page.read_text().replace("</body>", _OVERFLOW_SCRIPT + "</body>"))
    try:
        dom = _render(probe.as_uri(), width=1300)
    finally:
        probe.unlink()
    # The report's div, not the script's own source (the DOM dump holds both).
    report = re.search(r'id="overflow-report">overflow\[([^\]]*)\]', dom)
    assert report, f"{page.name}: the overflow probe did not run"
    return report.group(1).split()


# Clicks the leaderboard's "method" header twice and its "MaxBoxAccV2" header once, and reports
# the column each click left, in the rendered page itself.
_SORT_SCRIPT = """<script>
window.addEventListener('load', function () {
  var out = document.createElement('div');
  out.id = 'sort-report';
  var table = document.querySelector('table.wsol-sortable');
  var report = null;
  if (table) {
    var headers = Array.prototype.slice.call(table.querySelectorAll('thead th'));
    var index = function (name) {
      return headers.findIndex(function (h) { return h.textContent.trim() === name; });
    };
    var column = function (i, attribute) {
      return Array.prototype.map.call(table.tBodies[0].rows, function (row) {
        var cell = row.cells[i];
        return attribute ? cell.getAttribute('data-sort') : cell.textContent.trim();
      });
    };
    var method = index('method'), score = index('MaxBoxAccV2');
    headers[method].click();
    var up = column(method, false);
    headers[method].click();
    var down = column(method, false);
    headers[score].click();
    report = {up: up, down: down, scores: column(score, true)};
  }
  out.textContent = 'sort[' + JSON.stringify(report) + ']';
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.browser
def test_the_leaderboard_table_sorts_on_a_click(smoke_site):
    import html as html_lib

    _, site = smoke_site
    page = site / "notebooks" / "06_leaderboard.html"
    probe = page.with_name(f"_sort_{page.name}")
    probe.write_text(page.read_text().replace("</body>", _SORT_SCRIPT + "</body>"))
    try:
        dom = _render(probe.as_uri())
    finally:
        probe.unlink()
    report = re.search(r'id="sort-report">sort\[(.*?)\]</div>', dom, re.S)
    assert report, "the sort probe did not run"
    result = json.loads(html_lib.unescape(report.group(1)))
    assert result, "the leaderboard page has no sortable table"
    assert len(result["up"]) >= 3
    assert result["up"] == sorted(result["up"], key=str.lower)
    assert result["down"] == sorted(result["up"], key=str.lower, reverse=True)
    numbers = [float(v) for v in result["scores"] if v]
    assert numbers == sorted(numbers) and numbers, result["scores"]
    assert all(v for v in result["scores"][:len(numbers)]), "empty cells must sort last"
