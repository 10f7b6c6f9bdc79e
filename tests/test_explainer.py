"""Explainer plumbing: method instances, targets resolved once, one set of passes for multi-target methods."""

import pytest
import torch

import xvit
from xvit.methods.base import METHODS, Attribution, Method
from xvit.targets import explained_classes

from .tiny_models import SIZE, make


class CountingAllClasses(Method):
    """Toy multi-target method: one forward per batch; the map of class c is the constant logit y_c."""

    name = "counting_all_classes"
    per_target_pass = False

    def __init__(self) -> None:
        super().__init__()
        self.forwards = 0

    def attribute(self, ctx, x, targets):
        with torch.no_grad():
            logits = ctx.adapter.forward(x)
        self.forwards += 1
        targets = explained_classes(logits, None)[:, None] if targets is None else targets
        h, w = ctx.layout.grid
        raw = logits.gather(1, targets)[..., None, None].expand(*targets.shape, h, w)
        return Attribution(raw.reshape(-1, h, w), logits, targets.reshape(-1))


def test_multi_target_method_scores_all_targets_from_one_set_of_passes():
    model = make("xvit")
    x = torch.randn(3, 3, SIZE, SIZE)
    method = CountingAllClasses()
    targets = torch.tensor([[0, 1, 2], [4, 3, 2], [1, 1, 0]])
    exp = xvit.Explainer(model, method)(x, targets)
    assert method.forwards == 1
    assert exp.raw.shape[:2] == (3, 3)
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(exp.raw[..., 0, 0], logits.gather(1, targets))
    torch.testing.assert_close(exp.logits, logits)


def test_method_instance_with_extra_parameters_is_refused():
    with pytest.raises(TypeError, match="set_params"):
        xvit.Explainer(make("xvit"), CountingAllClasses(), start_layer=1)


def test_predicted_class_is_decided_in_one_place():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert explained_classes(logits, None).tolist() == [1, 0]
    assert explained_classes(logits, torch.tensor([2, 2])).tolist() == [2, 2]
    model = make("xvit")
    x = torch.randn(2, 3, SIZE, SIZE)
    for method in ("attnlrp", "input_x_gradient", "grad_attention_rollout"):
        exp = xvit.explain(model, x, method)
        assert exp.targets[:, 0].tolist() == exp.logits.argmax(-1).tolist()


@pytest.mark.parametrize("method,params,eager", [
    ("input_x_gradient", {}, False), ("integrated_gradients", {"n_steps": 2}, False),
    ("smoothgrad", {"n_samples": 2}, False), ("gradcam", {}, False), ("partial_lrp", {}, False),
    ("rollout", {}, True), ("grad_attention_rollout", {}, True),
])
def test_only_methods_that_read_attention_switch_off_the_fused_kernel(method, params, eager):
    model = make("timm_vit")
    attn = model.blocks[0].attn
    fused_before = attn.fused_attn
    seen = []
    handle = attn.register_forward_hook(lambda m, i, o: seen.append(m.fused_attn))
    try:
        xvit.explain(model, torch.randn(2, 3, SIZE, SIZE), method, **params)
    finally:
        handle.remove()
    assert seen and set(seen) == {fused_before and not eager}
    assert attn.fused_attn == fused_before


class _CountingRows(Method):
    """Wraps a registered method and records the number of rows of each call."""

    def __init__(self, inner: Method) -> None:
        super().__init__()
        self.inner, self.rows = inner, []
        self.needs_attention_probs = inner.needs_attention_probs

    def memory_per_row(self, ctx, x):
        return 1000

    def attribute(self, ctx, x, targets):
        self.rows.append(x.shape[0])
        return self.inner.attribute(ctx, x, targets)


@pytest.mark.parametrize("method", ["transformer_attribution", "grad_attention_rollout", "attnlrp"])
def test_max_memory_chunks_give_the_unchunked_maps(method):
    model = make("timm_deit_distilled")
    x = torch.randn(5, 3, SIZE, SIZE)
    whole = xvit.Explainer(model, method, max_memory=10**12)(x, [[0, 1]] * 5)
    counting = _CountingRows(METHODS.get(method)())
    chunked = xvit.Explainer(model, counting, max_memory=2500)(x, [[0, 1]] * 5)
    assert counting.rows == [2, 2, 2, 2, 2]  # 10 rows (5 images x 2 targets), 2 fit the budget
    torch.testing.assert_close(chunked.raw, whole.raw, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.logits, whole.logits)


def test_default_memory_budget_estimates_rows_from_the_model():
    from xvit.methods._memory import forward_backward_bytes, rows_per_chunk

    model = make("timm_vit")
    explainer = xvit.Explainer(model, "transformer_attribution")
    x = torch.randn(1, 3, SIZE, SIZE)
    per_row = forward_backward_bytes(explainer.adapter, explainer.adapter.layout(x), x)
    assert per_row > 2 * 17 * 48 * 4  # at least the residual stream in and out of both blocks
    assert rows_per_chunk(10 * per_row, per_row, 64) == 10 and rows_per_chunk(1, per_row, 64) == 1
    assert rows_per_chunk(10**15, None, 64) == 64


def _state(model):
    """Every flag an explainer may switch: each module's training flag, timm's fused_attn, HF's attention
    implementation."""
    return ([m.training for m in model.modules()], [getattr(m, "fused_attn", None) for m in model.modules()],
            [getattr(getattr(m, "config", None), "_attn_implementation", None) for m in model.modules()])


@pytest.fixture(scope="module")
def family_models():
    from .tiny_models import FACTORIES

    return {name: make(name) for name in FACTORIES}


FAMILIES = ["xvit", "xvit_reg_avg", "timm_vit", "timm_deit_distilled", "timm_reg_avg_dynamic", "hf_vit", "hf_deit",
            "hf_deit_teacher"]


@pytest.mark.parametrize("family", FAMILIES)
def test_nested_repeated_and_out_of_order_explainers_restore_the_model(family_models, family):
    model = family_models[family].train()
    before = _state(model)
    first, second = xvit.Explainer(model, "rollout"), xvit.Explainer(model, "rollout")
    with first:
        inside = _state(model)
    assert inside != before and _state(model) == before
    x = torch.randn(1, 3, SIZE, SIZE)
    expected = first(x).raw

    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # out of order: the second is still open, so the model stays switched
    assert _state(model) == inside
    torch.testing.assert_close(second(x).raw, expected)
    second.__exit__(None, None, None)
    assert _state(model) == before

    with first:  # re-entering the same explainer
        with first:
            torch.testing.assert_close(first(x).raw, expected)
        assert _state(model) == inside
    assert _state(model) == before
    model.eval()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_errors_inside_nested_explainers_restore_the_model(family_models, family, error):
    model = family_models[family].train()
    before = _state(model)
    explainer = xvit.Explainer(model, "rollout")
    with pytest.raises(error), explainer, xvit.Explainer(model, "gradcam"), explainer:
        raise error
    assert _state(model) == before
    model.eval()


@pytest.mark.parametrize("family", ["timm_vit", "hf_vit"])
def test_explainers_in_threads_restore_the_model(family_models, family):
    import threading

    model = family_models[family].train()
    before = _state(model)
    with xvit.Explainer(model, "rollout"):
        inside = _state(model)
    start, together, leave = threading.Barrier(6), threading.Barrier(6), threading.Barrier(6)
    seen = []

    def job(method):
        start.wait()
        with xvit.Explainer(model, method):
            together.wait()
            seen.append(_state(model) == inside)
            leave.wait()  # then they leave in any order

    threads = [threading.Thread(target=job, args=(m,)) for m in ["rollout", "gradcam"] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [True] * 6 and _state(model) == before
    model.eval()


@pytest.mark.parametrize("family", ["xvit", "hf_vit"])
def test_paths_pil_images_and_single_images_are_accepted(family, tmp_path):
    import numpy as np
    from PIL import Image

    model = make(family)
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)) for _ in range(2)]
    pictures[0].save(tmp_path / "a.png")
    x, _ = xvit.load_images(pictures, model)
    batch = xvit.explain(model, x, "rollout")
    from_files = xvit.explain(model, [tmp_path / "a.png", pictures[1]], "rollout")
    torch.testing.assert_close(from_files.raw, batch.raw)
    one_path = xvit.explain(model, str(tmp_path / "a.png"), "rollout")
    one_pil = xvit.Explainer(model, "rollout")(pictures[1])
    one_tensor = xvit.explain(model, x[1], "rollout")
    assert one_path.raw.shape[0] == one_pil.raw.shape[0] == one_tensor.raw.shape[0] == 1
    torch.testing.assert_close(one_path.raw[0], batch.raw[0])
    torch.testing.assert_close(one_pil.raw[0], batch.raw[1])
    torch.testing.assert_close(one_tensor.raw[0], batch.raw[1])


def test_unexplainable_inputs_are_refused_with_the_accepted_forms():
    with pytest.raises(TypeError, match=r"pass a normalised \(B, 3, H, W\) or \(3, H, W\) tensor, an image path"):
        xvit.explain(make("xvit"), 3, "rollout")
    with pytest.raises(TypeError, match="a list of paths or PIL images"):
        xvit.explain(make("xvit"), [], "rollout")


def test_targets_by_name_per_image_with_pred_and_top_k():
    model = make("xvit")
    model.xvit_class_names = ["circle", "square", "tabby cat", "star", "cross"]
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        logits = model(x)
    exp = xvit.explain(model, x, "input_x_gradient", target=["tabby", 3, "pred"])
    assert exp.targets[:, 0].tolist() == [2, 3, int(logits[2].argmax())]
    single = xvit.explain(model, x[2:], "input_x_gradient", target=int(logits[2].argmax()))
    torch.testing.assert_close(exp.raw[2:], single.raw)
    top = xvit.Explainer(model, "input_x_gradient")(x, top_k=3)
    assert top.targets.tolist() == logits.topk(3).indices.tolist()
    with pytest.raises(ValueError, match="Did you mean 'square'"):
        xvit.explain(model, x, "rollout", target="squar")
