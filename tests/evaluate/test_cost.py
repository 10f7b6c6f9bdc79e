import time

import pytest
import torch

from xvit.evaluate import measure_cost


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
