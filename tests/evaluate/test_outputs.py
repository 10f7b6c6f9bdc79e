"""The summary table: units and directions in every header, mIoU before mAP, the chance baseline last."""

from xvit.evaluate import metrics
from xvit.evaluate.outputs import markdown


def _row(method, metric, column, mean, direction="↑", **details):
    return {"method": method, "metric": metric, "column": column, "status": "ok", "direction": direction,
            "value": mean, "mean": mean, "ci95_low": mean - 0.5, "ci95_high": mean + 0.5, "n": 10,
            "passes_per_image": None, "passes_unit": None, "seconds": None, "details": details, "note": None}


def _table(md):
    main = md.split("\n## ")[0]  # the method table, before the dataset-level numbers
    lines = [line for line in main.splitlines() if line.startswith("| ")]
    return lines[0], lines[1:]


def test_headers_state_unit_and_direction_and_miou_leads_segmentation():
    summary = [_row(m, "segmentation", "segmentation", ap, miou=miou, pixel_accuracy=90.0)
               for m, ap, miou in (("random", 50.0, 30.0), ("rollout", 99.6, 52.0), ("gradcam", 79.8, 36.5))]
    summary += [_row(m, "pointing_game", "pointing_game", 0.9) for m in ("random", "rollout", "gradcam")]
    header, body = _table(markdown(summary, [], {}))
    assert header == ("| method | segmentation mIoU ↑ % [0-100] | segmentation mAP ↑ % [0-100] "
                      "| pointing_game ↑ hit rate [0-1] |")
    assert body[0] == "| rollout | 52.00 | 99.60 ± 0.500 | 0.900 ± 0.500 |"
    assert body[1].startswith("| gradcam | 36.50 |")
    assert body[-1].startswith("| random (chance) | 30.00 | 50.00 ± 0.500 |")  # the baseline closes the table


def test_baseline_is_explained_only_when_present():
    with_baseline = markdown([_row("random", "pointing_game", "pointing_game", 0.3)], [], {})
    without = markdown([_row("rollout", "pointing_game", "pointing_game", 0.9)], [], {})
    assert "chance baseline" in with_baseline and "chance baseline" not in without


def test_every_registered_column_declares_a_unit():
    for name, info in metrics().items():
        for column, unit in info["units"].items():
            assert isinstance(unit, str) and unit.strip(), (name, column)
