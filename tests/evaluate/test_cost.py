import time

import pytest
import torch

from xvit.evaluate import ExplanationCost, measure_cost


def test_cpu_time_and_peak_rss():
    def work():
        big = torch.ones(25_000_000)  # 100 MB, held for a few samples
        time.sleep(0.05)
        return float(big[-1])

    cost = measure_cost(work, n_images=4, warmup=0, repeats=2)
    assert cost.seconds >= 0.05 and cost.seconds_per_image == pytest.approx(cost.seconds / 4)
    if cost.memory_kind == "cpu_rss_sampled":
        assert cost.peak_memory_bytes >= 80e6
    else:
        assert cost.peak_memory_bytes is None


def test_rejects_bad_counts():
    with pytest.raises(ValueError, match="n_images"):
        measure_cost(lambda: None, n_images=0)


def test_cost_metric_reports_time_per_image_relative_to_the_forward_pass():
    whole = ExplanationCost()
    whole.update(0.4, 4, 0.1, 1000, "cpu_rss_sampled", "cpu")
    part = ExplanationCost()
    part.update(0.2, 2, 0.05, None, "cpu_rss_sampled", "cpu")
    whole.merge_state(part.state_dict())
    r = whole.compute()
    assert r.name == "cost" and r.higher_is_better is False
    assert r.scores.tolist() == pytest.approx([0.1] * 6) and r.value == pytest.approx(0.1)
    assert r.summary["forward_seconds_per_image"] == pytest.approx(0.15 / 6)
    assert r.summary["relative_to_forward"] == pytest.approx(4.0)
    assert (r.summary["peak_memory_bytes"], r.summary["memory_kind"], r.summary["device"]) == (1000, "cpu_rss_sampled",
                                                                                             "cpu")
