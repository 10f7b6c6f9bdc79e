import torch

import xvit
from xvit.methods import METHODS
from xvit.models import create_vit
from xvit.utils.batching import CPU_ROWS_PER_PASS, rows_per_pass


def test_rows_per_pass_defaults_by_device():
    assert rows_per_pass(None, "cpu", 128) == CPU_ROWS_PER_PASS == 16
    assert rows_per_pass(None, torch.device("cuda", 0), 128) == 128
    assert rows_per_pass(None, "meta", 50) == 50
    assert rows_per_pass(7, "cpu", 128) == 7


def test_mask_methods_resolve_their_rows_per_pass_and_keep_the_maps():
    model = create_vit("nano", img_size=16, num_classes=4).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    method = METHODS.get("rise")(n_masks=40)
    assert method.rows_per_pass(x) == 16 and method.accelerator_rows == 128
    assert METHODS.get("rise")(internal_batch_size=5).rows_per_pass(x) == 5
    auto = xvit.explain(model, x, "rise", target=1, n_masks=40)
    fixed = xvit.explain(model, x, "rise", target=1, n_masks=40, internal_batch_size=40)
    torch.testing.assert_close(auto.raw, fixed.raw, rtol=1e-5, atol=1e-6)
