"""Re-run the explanation-quality tables of ``docs/benchmarks.md`` on the bundled models: a resumable driver.

    OMP_NUM_THREADS=1 nohup python tools/quality_tables.py run --parallel 2 > runs/tables.log 2>&1 &
    python tools/quality_tables.py report > runs/tables/tables.md

Every table is a set of jobs, one ``xvit evaluate`` run per method (or per parameter setting) with its own
``--out`` under ``runs/tables/TABLE/LABEL``, so that ``--parallel`` single-threaded runs share the cores and an
interrupted job resumes from its saved (method, chunk) units. A job that finished with the same command on the same
checkpoint (SHA-256 of the bundled model's weights) is skipped, and so is one another live driver has claimed
(``running.pid``), so a second driver can join the same tables when a core frees up;
``jobs.jsonl`` records each finished job's command, wall-clock and commit. The two issue-13 analyses
(``tools/cui_experiments.py``) are jobs of the same kind with their own resumable chunks. ``report`` prints each
table in Markdown from the jobs' ``summary.json`` files, with the commands and the measured time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "tables"

CLASSIC = ("raw_attention", "rollout", "attention_flow", "grad_attention_rollout", "transformer_attribution",
           "partial_lrp", "full_lrp", "attnlrp", "cp_lrp", "gradcam", "attention_gradcam", "input_x_gradient",
           "integrated_gradients", "smoothgrad")
"""The methods of the first published tables (single, pair, spurious audit, blur substrate)."""
NEWER = ("bt_h", "bt_t", "tam", "tis", "vit_cx", "rise", "occlusion", "rcut")
"""The methods added by issue 20."""
NEWER_PARAMS = {"rise": ("rise.n_masks=500",), "tis": ("tis.n_masks=512",)}
"""Fewer masks than the defaults, to keep each of these runs within about half an hour of one core."""
GCA = tuple((c, s) for c in ("pos", "abs", "signed") for s in ("incomplete", "complete"))
"""The six (correction, scheme) combinations of ``gradient_corrected_attention`` (issue 13)."""

SPURIOUS_DATA = "xvit-shapes:spurious:test:{n}:marker=random"
SETTINGS = {
    # table kind: (model, data, metric options)
    "single": ("shapes-vit-tiny", "xvit-shapes:single:test:{n}", ("--steps", "16")),
    "pair": ("shapes-vit-tiny", "xvit-shapes:pair:test:{n}", ("--metrics", "class_sensitivity")),
    "spurious": ("shapes-vit-tiny-spurious", SPURIOUS_DATA, ("--metrics", "marker_share")),
    "control": ("shapes-vit-tiny", SPURIOUS_DATA, ("--metrics", "marker_share")),
    # The spurious model's maps of each image's true class: on a marked non-circle, the class the model did not
    # say (it says `circle`); does the map of the class it should have said still point at the marker?
    "true_class": ("shapes-vit-tiny-spurious", SPURIOUS_DATA,
                   ("--metrics", "marker_share", "--class-explained", "target")),
    "blur": ("shapes-vit-tiny", "xvit-shapes:single:test:{n}",
             ("--metrics", "perturbation", "--metric-param", "perturbation.substrate=blur")),
}


@dataclass(frozen=True)
class Job:
    """One resumable run: ``command`` writes its results to ``out``."""

    table: str
    label: str
    command: tuple[str, ...]
    model: str = "shapes-vit-tiny"

    @property
    def out(self) -> Path:
        return RUNS / self.table / self.label


@dataclass(frozen=True)
class Table:
    """A published table: its kind (a key of ``SETTINGS``, or ``analysis``), image count and rows."""

    name: str
    kind: str
    n: int
    rows: tuple[tuple[str, str, tuple[str, ...]], ...] = field(default=())  # (label, method, --param values)


def _rows_of(methods: tuple[str, ...], params: dict[str, tuple[str, ...]] | None = None
             ) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    return tuple((m, m, (params or {}).get(m, ())) for m in methods)


_GCA_ROWS = tuple((f"gca_{c}_{s}", "gradient_corrected_attention",
                   (f"gradient_corrected_attention.correction={c}", f"gradient_corrected_attention.scheme={s}"))
                  for c, s in GCA)
TABLES = (
    # Issue 12: the first published tables, each with the chance baseline.
    Table("single", "single", 1000, _rows_of((*CLASSIC, "random"))),
    Table("pair", "pair", 500, _rows_of((*CLASSIC, "random"))),
    Table("spurious", "spurious", 500, _rows_of((*CLASSIC, "random"))),
    Table("spurious_control", "control", 500, _rows_of((*CLASSIC, "random"))),
    Table("spurious_true_class", "true_class", 500, _rows_of((*CLASSIC, "random"))),
    Table("blur", "blur", 200, _rows_of((*CLASSIC, "random"))),
    # Issues 13 and 20: the six gradient-corrected combinations and the newer methods on the first 200 images,
    # with the two classic rows they are read against.
    Table("single200", "single", 200,
          _GCA_ROWS + _rows_of(("transformer_attribution", *NEWER), NEWER_PARAMS)),
    Table("pair200", "pair", 200, _GCA_ROWS + _rows_of(NEWER, NEWER_PARAMS)
          + (("rcut_gradcam", "rcut", ("rcut.weighting=gradcam",)),)),
    Table("spurious200", "spurious", 200, _GCA_ROWS + _rows_of(NEWER, NEWER_PARAMS)),
    Table("spurious200_control", "control", 200, _GCA_ROWS + _rows_of(NEWER, NEWER_PARAMS)),
    Table("guide", "analysis", 500),
    Table("rewrite", "analysis", 200),
)
ANALYSIS_OPTIONS = {"guide": ("--n", "500"), "rewrite": ("--n", "200", "--steps", "10")}


def jobs(table: Table) -> list[Job]:
    """The runs that make ``table``."""
    if table.kind == "analysis":
        out = (RUNS / table.name).relative_to(ROOT)
        return [Job(table.name, "run", (sys.executable, "tools/cui_experiments.py", table.name,
                                        *ANALYSIS_OPTIONS[table.name], "--out", str(out)))]
    model, data, options = SETTINGS[table.kind]
    result = []
    for label, method, params in table.rows:
        job = Job(table.name, label, ())
        command = ("xvit", "evaluate", "--model", model, "--data", data.format(n=table.n), *options,
                   "--methods", method, *(a for p in params for a in ("--param", p)), "--no-baseline",
                   "--no-progress", "--out", str(job.out.relative_to(ROOT)))
        result.append(Job(table.name, label, command, model))
    return result


def _weights_sha256(model: str) -> str:
    from xvit.models import bundled_model_dir

    return hashlib.sha256((bundled_model_dir(model) / "model.safetensors").read_bytes()).hexdigest()


def _signature(job: Job, sha256: str) -> str:
    """The command and the SHA-256 of the bundled checkpoint it measures: a job counts as finished only for both."""
    return " ".join(job.command) + f"\nmodel {job.model} sha256 {sha256}"


def _done(job: Job) -> bool:
    marker = job.out / "command.txt"
    return marker.is_file() and marker.read_text() == _signature(job, _weights_sha256(job.model))


def _git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    return True


def _claim(job: Job) -> bool:
    """Take ``job`` for this process (``running.pid`` in its folder), unless a live process already runs it: so
    that a second driver started on the same tables while cores free up never runs a job twice."""
    lock = job.out / "running.pid"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = lock.read_text().strip()
            if owner.isdigit() and _alive(int(owner)):
                return False
            lock.unlink(missing_ok=True)  # left by a driver that was stopped
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _run(job: Job) -> tuple[float, subprocess.CompletedProcess]:
    print(f"{time.strftime('%H:%M:%S')} start {job.table}/{job.label}", flush=True)
    start = time.perf_counter()
    with open(job.out / "run.log", "a") as log:
        proc = subprocess.run(job.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    return time.perf_counter() - start, proc


def run_job(job: Job) -> float | None:
    """Run (or resume) ``job`` unless it finished with the same command or another driver runs it; its wall-clock
    seconds, or ``None`` if skipped. Failures are reported and do not stop the other jobs."""
    if _done(job):
        return None
    job.out.mkdir(parents=True, exist_ok=True)
    if not _claim(job):
        print(f"{time.strftime('%H:%M:%S')} skip {job.table}/{job.label}: another driver runs it", flush=True)
        return None
    try:
        if _done(job):  # finished by another driver between the two checks
            return None
        seconds, proc = _run(job)
        if proc.returncode != 0:
            print(f"{time.strftime('%H:%M:%S')} FAILED {job.table}/{job.label} (exit {proc.returncode}; see "
                  f"{job.out / 'run.log'})", flush=True)
            return seconds
        _record(job, seconds)
    finally:
        (job.out / "running.pid").unlink(missing_ok=True)
    print(f"{time.strftime('%H:%M:%S')} done {job.table}/{job.label} in {seconds / 60:.1f} min", flush=True)
    return seconds


def _record(job: Job, seconds: float) -> None:
    """Mark ``job`` finished (``command.txt``) and append it to ``jobs.jsonl``."""
    sha256 = _weights_sha256(job.model)
    (job.out / "command.txt").write_text(_signature(job, sha256))
    with open(RUNS / "jobs.jsonl", "a") as f:
        f.write(json.dumps({"table": job.table, "label": job.label, "command": " ".join(job.command),
                            "model": job.model, "model_sha256": sha256,
                            "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%d %H:%M"),
                            "commit": _git_commit()}) + "\n")


# ---------------------------------------------------------------------------------------------------- report


def _summary(job: Job) -> dict | None:
    path = job.out / "summary.json"
    return json.loads(path.read_text()) if _done(job) and path.is_file() else None


def _seconds() -> dict[tuple[str, str], float]:
    path = RUNS / "jobs.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return {(r["table"], r["label"]): r["seconds"] for r in map(json.loads, lines)}


def _metric_table(summaries: dict[str, dict]) -> list[str]:
    """One table of ``summary.md``'s shape from several runs, each run's rows under its job's label."""
    from xvit.evaluate.outputs import summary_table

    return summary_table([dict(r, method=label) for label, s in summaries.items() for r in s["rows"]])


def _share(details: dict, group: str) -> str:
    share = details.get(f"{group}_share")
    if share is None:
        return f"n/a (n={details.get(f'{group}_n', 0)})"
    half = details.get(f"{group}_ci95")
    return f"{share:.3f}" + (f" ± {half:.3f}" if half is not None else "") + f" (n={details[f'{group}_n']})"


def _control_cell(row: dict | None) -> str:
    from xvit.evaluate.base import get_metric

    if row is None:
        return "not run"
    return get_metric(row["metric"]).format_cell(row) if row["status"] == "ok" else "n/a"


def _marker_row(summary: dict | None) -> dict | None:
    return next((r for r in summary["rows"] if r["column"] == "marker_share"), None) if summary else None


def _audit_table(audit: Table, control: Table, true_class: Table | None) -> list[str]:
    """The spurious-marker audit: marker share of the spurious model's maps (marked images it calls class 0, and
    the other marked images), of its maps of the true class of marked non-circles, and the control model's."""
    lines = ["| method | marker share, spurious model, marked → class 0 ↑ | marked, other prediction | "
             "marked non-circles, map of their true class | control model (never saw the marker) | chance |",
             "|---|---:|---:|---:|---:|---:|"]
    controls = {j.label: _summary(j) for j in jobs(control)}
    true_maps = {j.label: _summary(j) for j in jobs(true_class)} if true_class else {}
    for job in jobs(audit):
        row = _marker_row(_summary(job))
        if row is None:
            continue
        d = row["details"]
        t_row = _marker_row(true_maps.get(job.label))
        true_cell = _share(t_row["details"], "other") if t_row and t_row["status"] == "ok" else "not run"
        lines.append(f"| `{job.label}` | {_share(d, 'shortcut')} | {_share(d, 'other')} | {true_cell} | "
                     f"{_control_cell(_marker_row(controls.get(job.label)))} | {d['chance']:.3f} |")
    return lines


def report(names: list[str]) -> str:
    """Markdown for the named tables from what has finished: command pattern, minutes per job, the table."""
    seconds = _seconds()
    by_name = {t.name: t for t in TABLES}
    out = []
    for name in names:
        table = by_name[name]
        todo = jobs(table)
        finished = [j for j in todo if _done(j)]
        out += [f"## {name} ({len(finished)} of {len(todo)} jobs finished)", ""]
        minutes = ", ".join(f"{j.label} {seconds[(j.table, j.label)] / 60:.1f}" for j in finished
                            if (j.table, j.label) in seconds)
        shown = [" ".join(j.command).replace(sys.executable, "python") for j in todo]
        out += ["```bash", *shown, "```", "", f"Minutes per job: {minutes or 'none yet'}.", ""]
        if table.kind == "analysis":
            md = RUNS / name / "table.md"
            out += [md.read_text() if md.is_file() else "(not finished)", ""]
        elif table.kind == "spurious":
            control = next(t for t in TABLES if t.kind == "control" and t.n == table.n)
            true_class = next((t for t in TABLES if t.kind == "true_class" and t.n == table.n), None)
            out += [*_audit_table(table, control, true_class), ""]
        elif table.kind not in ("control", "true_class"):
            summaries = {j.label: s for j in finished if (s := _summary(j)) is not None}
            out += [*(_metric_table(summaries) if summaries else ["(no finished job)"]), ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run or resume the jobs of the named tables (default: all)")
    run.add_argument("tables", nargs="*", metavar="TABLE", help="tables to run (default: all)")
    run.add_argument("--parallel", type=int, default=2, help="jobs at a time, one thread each (default: 2)")
    rep = sub.add_parser("report", help="print the finished tables in Markdown")
    rep.add_argument("tables", nargs="*", metavar="TABLE", help="tables to print (default: all)")
    args = parser.parse_args()
    known = [t.name for t in TABLES]
    unknown = sorted(set(args.tables) - set(known))
    if unknown:
        parser.error(f"unknown table(s) {', '.join(unknown)}; the tables are: {', '.join(known)}")
    names = args.tables or known
    if args.command == "report":
        print(report(names))
        return
    todo = [j for t in TABLES if t.name in names for j in jobs(t)]
    RUNS.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        list(pool.map(run_job, todo))


if __name__ == "__main__":
    main()
