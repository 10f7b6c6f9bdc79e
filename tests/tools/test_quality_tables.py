"""tools/quality_tables.py: every job is a valid ``xvit evaluate`` command of registered methods and parameters,
finished jobs are skipped, and the report puts several runs into one table."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xvit.cli import build_parser
from xvit.cli.common import check_method_params, method_params_of
from xvit.methods import METHODS

TOOL = Path(__file__).resolve().parents[2] / "tools" / "quality_tables.py"


@pytest.fixture
def tool(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("quality_tables", TOOL)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quality_tables", module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "RUNS", tmp_path / "runs" / "tables")
    ran = []

    def fake_run(cmd, **kw):
        ran.append(cmd)
        return type("Done", (), {"returncode": 0, "stdout": "abc1234\n"})()

    monkeypatch.setattr(module.subprocess, "run", fake_run)
    return module, ran


def _evaluate_jobs(module):
    return [j for t in module.TABLES if t.kind != "analysis" for j in module.jobs(t)]


def test_every_job_is_a_valid_evaluate_command(tool):
    module, _ = tool
    jobs = _evaluate_jobs(module)
    assert len({j.out for j in jobs}) == len(jobs)
    for job in jobs:
        assert job.command[:2] == ("xvit", "evaluate")
        args = build_parser("evaluate").parse_args(list(job.command[1:]))
        assert len(args.methods) == 1 and not args.baseline
        assert args.methods[0] in METHODS
        check_method_params(method_params_of(args), args.methods)
        assert Path(args.out) == job.out.relative_to(module.ROOT)


def test_the_audit_pairs_with_its_control_on_the_same_images(tool):
    module, _ = tool
    tables = {t.name: t for t in module.TABLES}
    for audit, control in [("spurious", "spurious_control"), ("spurious200", "spurious200_control")]:
        a, c = tables[audit], tables[control]
        assert a.n == c.n and [r[0] for r in a.rows] == [r[0] for r in c.rows]
        assert "shapes-vit-tiny-spurious" in module.jobs(a)[0].command
        assert "shapes-vit-tiny" in module.jobs(c)[0].command
    true_class = tables["spurious_true_class"]
    assert (true_class.n, true_class.rows) == (tables["spurious"].n, tables["spurious"].rows)
    assert "shapes-vit-tiny-spurious" in module.jobs(true_class)[0].command


def test_finished_jobs_are_skipped_until_their_command_changes(tool):
    module, ran = tool
    job = module.jobs(module.TABLES[0])[0]
    assert module.run_job(job) is not None and ran[0] == job.command
    assert module.run_job(job) is None and len([c for c in ran if c[0] == "xvit"]) == 1
    record = json.loads((module.RUNS / "jobs.jsonl").read_text().splitlines()[0])
    assert record["label"] == job.label and record["commit"] == "abc1234"
    changed = module.Job(job.table, job.label, (*job.command, "--restart"))
    assert module.run_job(changed) is not None


def test_a_finished_job_runs_again_when_its_checkpoint_changes(tool, monkeypatch, tmp_path):
    module, ran = tool
    import xvit.models

    weights = tmp_path / "shapes-vit-tiny" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"old")
    monkeypatch.setattr(xvit.models, "bundled_model_dir", lambda name: tmp_path / name)
    job = module.jobs(module.TABLES[0])[0]
    module.run_job(job)
    assert module._done(job)
    weights.write_bytes(b"new")
    assert not module._done(job) and module.run_job(job) is not None


def _row(method, mean):
    return {"method": method, "metric": "class_sensitivity", "column": "class_sensitivity", "status": "ok",
            "direction": "↑", "value": mean, "mean": mean, "ci95_low": mean - 0.1, "ci95_high": mean + 0.1, "n": 10,
            "passes_per_image": None, "passes_unit": None, "seconds": 1.0, "details": {}, "note": None}


def test_report_puts_one_table_together_from_the_runs_with_chance_last(tool):
    module, _ = tool
    pair = module.Table("pair", "pair", 4, module._rows_of(("random", "rollout")))
    module.TABLES = (pair,)
    for job, mean in zip(module.jobs(pair), (0.5, 0.75)):
        module.run_job(job)
        (job.out / "summary.json").write_text(json.dumps({"rows": [_row(job.label, mean)]}))
    text = module.report(["pair"])
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| rollout | 0.750 ± 0.100")
    assert lines[2].startswith("| random (chance) | 0.500 ± 0.100")
    assert "2 of 2 jobs finished" in text and "--methods rollout" in text


def _marker_row(shortcut, other, other_n):
    details = {"chance": 0.008, "shortcut_share": shortcut, "shortcut_ci95": 0.01, "shortcut_n": 7,
               "other_share": other, "other_ci95": 0.02 if other_n else None, "other_n": other_n}
    return {**_row("m", shortcut), "metric": "marker_share", "column": "marker_share", "details": details}


def test_the_audit_table_shows_true_class_maps_and_the_control_beside_the_shortcut(tool):
    module, _ = tool
    rows = module._rows_of(("rollout",))
    audit, control, true_class = (module.Table("spurious", "spurious", 4, rows),
                                  module.Table("spurious_control", "control", 4, rows),
                                  module.Table("spurious_true_class", "true_class", 4, rows))
    module.TABLES = (audit, control, true_class)
    for table, row in [(audit, _marker_row(0.4, None, 0)), (control, _marker_row(0.01, 0.01, 5)),
                       (true_class, _marker_row(0.3, 0.2, 5))]:
        job = module.jobs(table)[0]
        assert "--class-explained" in job.command if table is true_class else "--class-explained" not in job.command
        module.run_job(job)
        (job.out / "summary.json").write_text(json.dumps({"rows": [row]}))
    text = module.report(["spurious", "spurious_control", "spurious_true_class"])
    line = next(x for x in text.splitlines() if x.startswith("| `rollout`"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "0.400 ± 0.010 (n=7)" and cells[2] == "n/a (n=0)" and cells[3] == "0.200 ± 0.020 (n=5)"
    assert cells[4].startswith("0.010") and cells[5] == "0.008"
    assert text.count("| method |") == 1  # control and true-class runs appear only inside the audit table


def test_a_job_another_live_driver_runs_is_skipped_and_a_stale_claim_is_taken_over(tool):
    module, ran = tool
    job = module.jobs(module.TABLES[0])[0]
    job.out.mkdir(parents=True)
    (job.out / "running.pid").write_text(str(os.getppid()))  # a live process
    assert module.run_job(job) is None and not ran
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (job.out / "running.pid").write_text(str(dead.pid))
    assert module.run_job(job) is not None and ran[0] == job.command
    assert not (job.out / "running.pid").exists() and module._done(job)
