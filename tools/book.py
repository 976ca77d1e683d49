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
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PROFILES = ("smoke", "default", "paper")
# Minutes each chapter took in the last cold build measured for the README, per profile: the
# estimate of what is left before this machine has recorded its own.
REFERENCE_MINUTES = ROOT / "tools" / "book_minutes.json"
# How often a training in progress is reported on the terminal (seconds).
PROGRESS_EVERY = 15.0


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


class _ProgressPrinter(threading.Thread):
    """Follows the progress file that ``wsolkit.train.fit`` appends to (one JSON line per epoch)
    and prints, every ``PROGRESS_EVERY`` seconds and at the end of each run, the run, epoch i of
    N, images/s and the time left for the run."""

    def __init__(self, path: Path, book_minutes: float | None = None) -> None:
        super().__init__(daemon=True)
        self.path = path
        # What the book needed from this chapter's start by the record (None: no record).
        self.book_minutes, self.began = book_minutes, time.time()
        self.stop = threading.Event()
        self.last_print = 0.0

    def _show(self, line: dict) -> None:
        done = line["epoch"] - line.get("start_epoch", 0)
        left = (line["epochs"] - line["epoch"]) * line["seconds"] / max(done, 1)
        final = line["epoch"] == line["epochs"]
        if not final and time.time() - self.last_print < PROGRESS_EVERY:
            return
        self.last_print = time.time()
        status = "trained" if final else f"~{left / 60:.1f} min left for this run"
        if self.book_minutes is not None:
            book_left = max(self.book_minutes - (time.time() - self.began) / 60, 0.0)
            status += f", ~{book_left:.0f} min for the book"
        print(f"[book]   {line['run']}: epoch {line['epoch']}/{line['epochs']}, "
              f"{line['images_per_s']:.0f} images/s, {status}", flush=True)

    def run(self) -> None:
        offset = 0
        while True:
            stopping = self.stop.wait(1.0)
            if self.path.exists():
                with open(self.path) as f:
                    f.seek(offset)
                    for raw in f:
                        if raw.endswith("\n"):
                            offset += len(raw.encode())
                            try:
                                self._show(json.loads(raw))
                            except (ValueError, KeyError):
                                pass
            if stopping:
                return


def _training_precision() -> str:
    """What this machine trains in: ``"cuda"``, ``"bf16"`` (a CPU with native bf16) or
    ``"fp32"`` (any other CPU, or ``WSOL_NATIVE_BF16=0``)."""
    import torch

    from wsolkit.train import cpu_has_native_bf16

    if torch.cuda.is_available():
        return "cuda"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def _minutes_on_record(out_dir: Path, profile: str) -> dict[str, float]:
    """Per chapter, the minutes of its last execution here, else of the reference build: the
    one in this machine's precision where the record has it (``"<profile>:fp32"``), since a CPU
    without native bf16 trains about 2.5 times slower than the bf16 reference."""
    minutes = {}
    if REFERENCE_MINUTES.exists():
        reference = json.loads(REFERENCE_MINUTES.read_text())
        minutes.update(reference.get(profile, {}))
        if _training_precision() == "fp32":
            minutes.update(reference.get(f"{profile}:fp32", {}))
    for stamp in out_dir.glob(".*.minutes"):
        minutes[stamp.name[1:-len(".minutes")]] = float(stamp.read_text())
    return minutes


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
    sources = notebook_sources(only)
    pending = [s for s in sources if force or not _up_to_date(s, out_dir, params)]
    on_record = _minutes_on_record(out_dir, profile)
    for source in sources:
        target = out_dir / f"{source.stem}.ipynb"
        stamp = out_dir / f".{source.stem}.fingerprint"
        fingerprint = _fingerprint(source, params)
        if source not in pending:
            print(f"[book] {source.stem}: up to date ({profile})", flush=True)
            executed.append(target)
            continue
        unexecuted = source.with_suffix(".ipynb")
        jupytext.write(jupytext.read(source), unexecuted)
        left = [on_record.get(s.stem) for s in pending[pending.index(source):]]
        book_minutes = sum(left) if all(m is not None for m in left) else None
        estimate = ("" if book_minutes is None else
                    f"; the book needs ~{book_minutes:.0f} min more by the last build on record")
        print(f"[book] {source.stem}: executing on profile {profile!r}{estimate} ...", flush=True)
        start = time.time()
        # fit() reports every epoch to this file; the printer shows it on the terminal.
        progress_file = Path(tempfile.mkstemp(prefix="wsol-progress-", suffix=".jsonl")[1])
        os.environ["WSOL_PROGRESS_FILE"] = str(progress_file)
        # The kernel's OpenMP threads wait passively (wsolkit.train.threads): set before the
        # kernel imports torch, which is before it imports wsolkit.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        printer = _ProgressPrinter(progress_file, book_minutes)
        printer.start()
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
        finally:
            printer.stop.set()
            printer.join()
            os.environ.pop("WSOL_PROGRESS_FILE", None)
            progress_file.unlink(missing_ok=True)
        stamp.write_text(fingerprint)
        minutes = (time.time() - start) / 60
        (out_dir / f".{source.stem}.minutes").write_text(f"{minutes:.2f}\n")
        print(f"[book] {source.stem}: done in {minutes * 60:.0f} s", flush=True)
        executed.append(target)
    return executed


def _up_to_date(source: Path, out_dir: Path, params: dict) -> bool:
    target = out_dir / f"{source.stem}.ipynb"
    stamp = out_dir / f".{source.stem}.fingerprint"
    return target.exists() and stamp.exists() and stamp.read_text() == _fingerprint(source, params)


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
    shutil.copytree(mathjax, staging / "_static" / "mathjax", dirs_exist_ok=True)
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
    shutil.copytree(ROOT / "_static", staging / "_static")
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
