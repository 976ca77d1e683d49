"""Execute the book's notebooks with papermill and build the site with Jupyter Book.

Notebooks live in ``notebooks/`` as jupytext MyST Markdown without outputs. This tool turns each
into an ``.ipynb``, executes it with papermill on a profile, and builds the site from a staging
folder that holds the prose pages and the executed notebooks side by side, so the table of
contents resolves every chapter to its executed copy rather than to the output-free source.

    python tools/book.py execute --profile default --out book/executed/default
    python tools/book.py build --executed book/executed/default --out .
    python tools/book.py all --profile default          # both, as ``make book`` does

A notebook is re-executed only when its source, the parameters, or the ``wsolkit`` sources
changed since its last successful execution (trained models come from the run cache anyway).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PROFILES = ("smoke", "default", "paper")


class NotebookFailed(RuntimeError):
    """A notebook raised during execution; the message names the notebook and the cell."""


def notebook_sources(only: list[str] | None = None) -> list[Path]:
    """The chapter sources ``notebooks/NN_topic.md`` in book order, optionally filtered by name."""
    sources = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.md"))
    if only:
        unknown = set(only) - {p.stem for p in sources}
        if unknown:
            raise SystemExit(
                f"unknown notebook(s) {sorted(unknown)}; known: {[p.stem for p in sources]}"
            )
        sources = [p for p in sources if p.stem in only]
    return sources


def _fingerprint(source: Path, parameters: dict) -> str:
    digest = hashlib.sha256(source.read_bytes())
    digest.update(json.dumps(parameters, sort_keys=True).encode())
    for path in sorted((ROOT / "wsolkit").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _failure_report(notebook_path: Path) -> str:
    """Names the first cell of an executed notebook that carries an error output."""
    nb = json.loads(notebook_path.read_text())
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                source = "".join(cell.get("source", "")).strip().splitlines()
                first = source[0] if source else ""
                return (f"cell {index} ({first[:70]!r}): "
                        f"{output.get('ename')}: {output.get('evalue')}")
    return "no error output recorded (kernel died or timed out?)"


def execute(profile: str, out_dir: Path, only: list[str] | None = None,
            parameters: dict | None = None, force: bool = False) -> list[Path]:
    """Executes each notebook on ``profile``; returns the executed notebooks in book order."""
    import jupytext
    import papermill

    if profile not in PROFILES:
        raise SystemExit(f"unknown profile {profile!r}; expected one of {PROFILES}")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Progress bars are for people watching a kernel; executed copies for the site go without.
    params = {"profile": profile, "show_progress": False, **(parameters or {})}
    executed = []
    for source in notebook_sources(only):
        target = out_dir / f"{source.stem}.ipynb"
        stamp = out_dir / f".{source.stem}.fingerprint"
        fingerprint = _fingerprint(source, params)
        if (not force and target.exists() and stamp.exists()
                and stamp.read_text() == fingerprint):
            print(f"[book] {source.stem}: up to date ({profile})", flush=True)
            executed.append(target)
            continue
        unexecuted = source.with_suffix(".ipynb")
        jupytext.write(jupytext.read(source), unexecuted)
        print(f"[book] {source.stem}: executing on profile {profile!r} ...", flush=True)
        start = time.time()
        try:
            papermill.execute_notebook(
                str(unexecuted), str(target), parameters=params, cwd=str(NOTEBOOKS),
                kernel_name="python3", progress_bar=False, log_output=False,
            )
        except papermill.PapermillExecutionError as error:
            stamp.unlink(missing_ok=True)
            raise NotebookFailed(
                f"notebook {source.relative_to(ROOT)} failed on profile {profile!r} in cell "
                f"{error.exec_count}: {error.ename}: {error.evalue}"
            ) from None
        except Exception as error:  # kernel death, timeouts: still name the notebook
            stamp.unlink(missing_ok=True)
            report = _failure_report(target) if target.exists() else str(error)
            raise NotebookFailed(
                f"notebook {source.relative_to(ROOT)} failed on profile {profile!r}: {report}"
            ) from error
        stamp.write_text(fingerprint)
        print(f"[book] {source.stem}: done in {time.time() - start:.0f} s", flush=True)
        executed.append(target)
    return executed


MATHJAX = "mathjax@3.2.2"


def _local_mathjax() -> Path | None:
    """A local copy of MathJax's ``tex-chtml.js`` and its fonts, so formulas render offline.

    Fetched once from the npm registry (``npm pack``) into ``_build/mathjax``; without npm the
    site falls back to Jupyter Book's default, MathJax from a CDN, and says so.
    """
    cache = ROOT / "_build" / "mathjax"
    if (cache / "tex-chtml.js").exists():
        return cache
    npm = shutil.which("npm")
    if npm is None:
        print("[book] npm not found: the site will load MathJax from a CDN", flush=True)
        return None
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([npm, "pack", MATHJAX, "--silent"], cwd=tmp, capture_output=True,
                                text=True, timeout=300)
        archives = list(Path(tmp).glob("mathjax-*.tgz"))
        if result.returncode != 0 or not archives:
            print(f"[book] `npm pack {MATHJAX}` failed ({result.stderr.strip()[:200]}): the site "
                  "will load MathJax from a CDN", flush=True)
            return None
        staging = Path(tmp) / "mathjax"
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("package/es5/")
                if member.isfile() and (name == "tex-chtml.js"
                                        or name.startswith("output/chtml/fonts/woff-v2/")):
                    target = staging / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.extractfile(member).read())
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.move(str(staging), cache)
    return cache


def _use_local_mathjax(staging: Path) -> None:
    import yaml

    mathjax = _local_mathjax()
    if mathjax is None:
        return
    shutil.copytree(mathjax, staging / "_static" / "mathjax")
    config_path = staging / "_config.yml"
    config = yaml.safe_load(config_path.read_text())
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["mathjax_path"] = "mathjax/tex-chtml.js"
    sphinx_config["html_static_path"] = ["_static"]
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def build(executed_dir: Path, out_dir: Path) -> Path:
    """Builds the HTML site from the prose pages and the executed notebooks; fails on warnings."""
    staging = out_dir / "_build" / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, staging / name)
    shutil.copytree(ROOT / "book", staging / "book",
                    ignore=shutil.ignore_patterns("executed", "_build"))
    _use_local_mathjax(staging)
    (staging / "notebooks").mkdir()
    missing = []
    for source in notebook_sources():
        executed = executed_dir / f"{source.stem}.ipynb"
        if not executed.exists():
            missing.append(executed)
            continue
        shutil.copy2(executed, staging / "notebooks" / executed.name)
    if missing:
        raise SystemExit(
            "these chapters have no executed notebook; run `python tools/book.py execute` first: "
            + ", ".join(str(m) for m in missing))
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(staging),
               "--path-output", str(out_dir), "-W", "--keep-going", "--all"]
    result = subprocess.run(command, cwd=staging)
    if result.returncode != 0:
        raise SystemExit(f"jupyter-book build failed (exit {result.returncode}); see the warnings above")
    html = out_dir / "_build" / "html"
    print(f"[book] site built: {html / 'index.html'}", flush=True)
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("execute", "all"):
        p = sub.add_parser(name)
        p.add_argument("--profile", default=os.environ.get("PROFILE", "default"))
        p.add_argument("--out", type=Path, default=None,
                       help="folder for executed notebooks (default book/executed/<profile>)")
        p.add_argument("--only", nargs="*", help="notebook names, e.g. 00_cam_baseline")
        p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                       metavar=("NAME", "VALUE"), help="extra papermill parameter (YAML value)")
        p.add_argument("--force", action="store_true", help="re-execute even when up to date")
        if name == "all":
            p.add_argument("--site", type=Path, default=ROOT, help="folder receiving _build/html")
    b = sub.add_parser("build")
    b.add_argument("--executed", type=Path, required=True)
    b.add_argument("--site", type=Path, default=ROOT)
    args = parser.parse_args(argv)

    try:
        if args.command in ("execute", "all"):
            import yaml
            extra = {name: yaml.safe_load(value) for name, value in args.parameter}
            out = args.out or ROOT / "book" / "executed" / args.profile
            execute(args.profile, out, args.only, extra, args.force)
            if args.command == "all":
                build(out, args.site)
        else:
            build(args.executed, args.site)
    except NotebookFailed as error:
        print(f"[book] FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
