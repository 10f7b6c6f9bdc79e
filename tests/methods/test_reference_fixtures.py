"""Parity with the reference outputs of Chefer et al.'s code and of lxt (../shared/reference/*/README.md).

Tolerance: |ours − ref| ≤ 1e-5·max|ref| + 1e-4·|ref|, as both READMEs specify. LRP-style Chefer outputs
are compared in float64 (the README's instruction: the reference float32 path amplifies rounding noise);
attention-only outputs and the lxt maps in float32.
"""

import pytest
import torch

import xvit
from tests import reference as ref

pytestmark = pytest.mark.skipif(not ref.available(), reason="../shared/reference is not present")

CASES = [(i, t) for i in range(4) for t in ("pred", "other")]


@pytest.fixture(scope="module")
def chefer():
    return ref.outputs("chefer")


@pytest.fixture(scope="module")
def lxt():
    return ref.outputs("attnlrp")


def _explain(model, x, method, target, **params):
    return xvit.explain(model, x, method, target=target, **params).raw[0, 0]


def test_logits_match_reference_models(chefer):
    model = ref.reference_model()
    for i, x in enumerate(ref.inputs()):
        torch.testing.assert_close(model(x), chefer[f"in{i}.logits.vit_new"], rtol=1e-4, atol=1e-5)


CHEFER_LRP = [
    ("ta_start1", "transformer_attribution", {"start_layer": 1}),
    ("ta_start0", "transformer_attribution", {"start_layer": 0}),
    ("lrp_full", "full_lrp", {}),
    ("lrp_full_ours", "full_lrp", {"rules": "conservative"}),
    ("lrp_last_layer", "partial_lrp", {}),
    ("lrp_last_layer_ours", "partial_lrp", {"rules": "conservative"}),
]


@pytest.mark.parametrize("key,method,params", CHEFER_LRP, ids=[c[0] for c in CHEFER_LRP])
@pytest.mark.parametrize("case", CASES, ids=[f"in{i}.{t}" for i, t in CASES])
def test_chefer_relevance_methods_float64(chefer, key, method, params, case):
    i, which = case
    model, x = ref.reference_model(torch.float64), ref.inputs(torch.float64)[i]
    target = int(chefer[f"in{i}.targets"][0 if which == "pred" else 1])
    ref.assert_close_scaled(_explain(model, x, method, target, **params), chefer[f"in{i}.{which}.{key}"])


@pytest.mark.parametrize("case", CASES, ids=[f"in{i}.{t}" for i, t in CASES])
def test_attention_gradcam_float32(chefer, case):
    i, which = case
    model, x = ref.reference_model(), ref.inputs()[i]
    target = int(chefer[f"in{i}.targets"][0 if which == "pred" else 1])
    e = xvit.explain(model, x, "attention_gradcam", target=target)
    ref.assert_close_scaled(e.raw[0, 0], chefer[f"in{i}.{which}.gradcam_attn_unnormalised"])
    stored = chefer[f"in{i}.{which}.gradcam_attn"]
    if torch.isnan(stored).all():
        # in3.pred: the clamped map is all zeros and the reference's min-max divides 0 by 0; xvit
        # returns zeros there instead of NaN (documented in the method's docstring).
        assert torch.count_nonzero(e.raw) == 0 and torch.count_nonzero(e.maps) == 0
    else:
        m = e.raw[0, 0]
        ref.assert_close_scaled((m - m.min()) / (m.max() - m.min()), stored)


@pytest.mark.parametrize("i", range(4))
def test_attention_only_methods_float32(chefer, i):
    model, x = ref.reference_model(), ref.inputs()[i]
    ref.assert_close_scaled(_explain(model, x, "raw_attention", None), chefer[f"in{i}.last_layer_attn"])
    ref.assert_close_scaled(_explain(model, x, "rollout", None), chefer[f"in{i}.rollout_start0"])
    ref.assert_close_scaled(_explain(model, x, "rollout", None, start_layer=1), chefer[f"in{i}.rollout_start1"])


@pytest.mark.parametrize("method", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("case", CASES, ids=[f"in{i}.{t}" for i, t in CASES])
def test_lxt_methods_float32(lxt, method, case):
    i, which = case
    model, x = ref.reference_model(), ref.inputs()[i]
    target = int(lxt[f"in{i}.targets"][0 if which == "pred" else 1])
    e = xvit.explain(model, x, method, target=target, conv_gamma=0.0, linear_gamma=0.0)
    ref.assert_close_scaled(e.raw[0, 0], lxt[f"in{i}.{which}.{method}"])
    torch.testing.assert_close(e.meta["relevance_sum"][0, 0], lxt[f"in{i}.{which}.{method}"].sum(),
                               rtol=1e-3, atol=1e-4)


def test_debug_tensors_transformer_attribution():
    """Intermediate relevances R_A^(b) of the reference (input 0, class 5) are reproduced block by block."""
    from safetensors.torch import load_file

    from xvit.adapters import get_adapter
    from xvit.capture import record
    from xvit.relevance import COMPOSITES, propagate

    debug = load_file(str(ref.CHEFER / "debug_input0_pred.safetensors"))
    model, x = ref.reference_model(torch.float64), ref.inputs(torch.float64)[0]
    adapter = get_adapter(model)
    rec = record(adapter, x, torch.tensor([5]), block_inputs=(0,))
    prop = propagate(adapter, COMPOSITES.get("chefer2021")(), rec.targets, z=rec.block_inputs[0],
                     attention_blocks=range(4))
    for b in range(4):
        ref.assert_close_scaled(prop.attention[b][0], debug["attn_rel"][b])
    ref.assert_close_scaled(prop.start[0], debug["rel_tokens"][0])


def test_reference_weights_give_same_maps_through_timm():
    """The same weights in timm's VisionTransformer give the same Transformer Attribution map."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import load_file

    tm = timm.models.vision_transformer.VisionTransformer(img_size=224, patch_size=16, embed_dim=96, depth=4,
                                                          num_heads=3, num_classes=10, qkv_bias=True)
    tm.load_state_dict(load_file(str(ref.WEIGHTS)), strict=True)
    tm = tm.double().eval()
    x = ref.inputs(torch.float64)[3]
    ours = _explain(ref.reference_model(torch.float64), x, "transformer_attribution", 1)
    theirs = _explain(tm, x, "transformer_attribution", 1)
    torch.testing.assert_close(theirs, ours, rtol=1e-6, atol=1e-9)



# --- Beyond Intuition (BT-H, BT-T) and Transition Attention Maps (../shared/reference/{beyond_intuition,tam}) ---
# Float32, as both READMEs allow. The reasoning feedback W (20 forward+backward passes per row) is the same for
# every key, so the start-layer variants are checked on one W; the public path is checked at the primary keys.

BT_TAM = [
    ("beyond_intuition", "bt_h_start0", "bt_h", {"start_layer": 0}),
    ("beyond_intuition", "bt_h_start2", "bt_h", {"start_layer": 2}),
    ("beyond_intuition", "bt_h_start3", "bt_h", {"start_layer": 3}),
    ("beyond_intuition", "bt_t_start0", "bt_t", {"start_layer": 0}),
    ("beyond_intuition", "bt_t_start2", "bt_t", {"start_layer": 2}),
    ("tam", "tam_start0", "tam", {"start_layer": 0}),
    ("tam", "tam_start1", "tam", {"start_layer": 1}),
    ("tam", "tam_start0_nointegral", "tam", {"start_layer": 0, "with_integral": False}),
]
PRIMARY = [c for c in BT_TAM if c[1] in ("bt_h_start2", "bt_t_start2", "tam_start0")]  # also stored as `_map`


def _fixture(name, file="outputs"):
    from safetensors.torch import load_file

    return load_file(str(ref.ROOT / name / f"{file}.safetensors"))


def _rows_and_targets(stored):
    """The 8 cases as one batch: inputs repeated per target, image-major."""
    x = torch.cat(ref.inputs()).repeat_interleave(2, 0)
    targets = torch.stack([stored[f"in{i}.targets"] for i in range(4)]).reshape(-1)
    return x, targets


def test_beyond_intuition_and_tam_every_start_layer_float32():
    from xvit.adapters import get_adapter
    from xvit.methods import METHODS
    from xvit.methods._feedback import integrated_last_gradient, read_out, readout_rows
    from xvit.methods.base import Context

    stored = {name: _fixture(name) for name in ("beyond_intuition", "tam")}
    model = ref.reference_model()
    x, targets = _rows_and_targets(stored["tam"])
    adapter = get_adapter(model)
    ctx = Context(adapter, adapter.layout(x))
    rows, weights = readout_rows(ctx.layout, x.device)
    with adapter.eager_attention():
        feedback = integrated_last_gradient(ctx, x, targets, 20, 64, rows).clamp(min=0).mean(1)
        for folder, key, method, params in BT_TAM:
            if method == "tam" and not params.get("with_integral", True):
                raw = METHODS.get(method)(**params).attribute(ctx, x, targets).raw  # its own plain gradient
            elif method == "tam":
                raw = read_out(ctx.layout, weights, _tam_state(ctx, x, params["start_layer"], rows) * feedback)
            else:
                perception = METHODS.get(method)(**params)._perception
                _, _, relevance = perception(ctx, x, targets, range(params["start_layer"], 4), rows)
                raw = read_out(ctx.layout, weights, feedback * relevance)
            for n, (i, which) in enumerate(CASES):
                ref.assert_close_scaled(raw[n], stored[folder][f"in{i}.{which}.{key}"])


def _tam_state(ctx, x, start, rows):
    rec = ctx.record(x, None, reduce=lambda a, _: a.mean(1))
    state = rec.reduced[3][:, rows]
    for i in reversed(range(start, 3)):
        state = state @ rec.reduced[i] + state
    return state


@pytest.mark.parametrize("folder,key,method,params", PRIMARY, ids=[c[1] for c in PRIMARY])
def test_beyond_intuition_and_tam_primary_keys_public_path(folder, key, method, params):
    stored = _fixture(folder)
    inputs = [0]  # both targets; every input is checked at every key above
    x = torch.cat([ref.inputs()[i] for i in inputs])
    targets = torch.stack([stored[f"in{i}.targets"] for i in inputs])
    e = xvit.explain(ref.reference_model(), x, method, target=targets, **params)
    for n, i in enumerate(inputs):
        for k, which in enumerate(("pred", "other")):
            ref.assert_close_scaled(e.raw[n, k], stored[f"in{i}.{which}.{key}"])
            ref.assert_close_scaled(e.maps[n, k], stored[f"in{i}.{which}.{key}_map"])
        torch.testing.assert_close(e.logits[n], stored[f"in{i}.logits"][0], rtol=1e-4, atol=1e-5)


def test_beyond_intuition_debug_tensors():
    """BT's head weights, token order and feedback W of the reference (input 0, class 5) are reproduced."""
    from xvit.adapters import get_adapter
    from xvit.methods._feedback import integrated_last_gradient
    from xvit.methods.base import Context
    from xvit.methods.beyond_intuition import _token_order, head_weighted

    debug = _fixture("beyond_intuition", "debug_input0_pred")
    model, x = ref.reference_model(), ref.inputs()[0]
    adapter = get_adapter(model)
    ctx = Context(adapter, adapter.layout(x))
    with adapter.eager_attention():
        rec = ctx.record(x, torch.tensor([5]), attention=True, grads=True, block_inputs=tuple(range(4)))
        w = integrated_last_gradient(ctx, x, torch.tensor([5]), 20, 64, torch.arange(197))
    for b in range(4):
        a, g = rec.attentions[b], rec.attention_grads[b]
        importance = (a.transpose(-1, -2) @ g).abs().mean((-2, -1))
        ref.assert_close_scaled(importance[0] / importance[0].sum(), debug["bt.attn_head_weights"][b])
        ref.assert_close_scaled(head_weighted(a, g)[0],
                                (debug["bt.attn_head_weights"][b][:, None, None] * a[0]).sum(0))
        ref.assert_close_scaled(_token_order(ctx, b, rec.block_inputs[b])[0], debug["bt.token_order"][b])
    ref.assert_close_scaled(w.clamp(min=0).mean(1)[0], debug["bt.w_state"])
    tam = _fixture("tam", "debug_input0_pred")
    ref.assert_close_scaled(w.clamp(min=0).mean(1)[0, 0], tam["tam.w_state_row0"])


# --- Transformer Input Sampling (../shared/reference/tis): the reference's masks are given, float32 ---


@pytest.mark.parametrize("i", range(4))
def test_tis_with_the_reference_masks_float32(i):
    from xvit.perturb import score

    stored = _fixture("tis")
    model, x, masks = ref.reference_model(), ref.inputs()[i], stored[f"in{i}.tis_masks"]
    targets = stored[f"in{i}.targets"][None]
    e = xvit.explain(model, x, "tis", target=targets, masks=masks)
    scores = score(model, x, masks, targets, space="token", readout="softmax")
    for k, which in enumerate(("pred", "other")):
        ref.assert_close_scaled(scores[0, :, k], stored[f"in{i}.{which}.tis_scores"])
        raw = e.raw[0, k]
        ref.assert_close_scaled(raw, stored[f"in{i}.{which}.tis_raw"])
        ref.assert_close_scaled((raw - raw.min()) / (raw - raw.min()).max(), stored[f"in{i}.{which}.tis"])
    assert e.meta["n_masks"].tolist() == [128] and e.meta["n_forwards"].tolist() == [1]
    assert e.meta["n_short_forwards"].tolist() == [128]  # the supplied masks' shortened sequences
    assert e.meta["short_tokens"].tolist() == [1 + masks.sum(-1).float().mean().item()]


def test_tis_clusters_the_reference_vectors():
    from xvit.adapters import get_adapter
    from xvit.methods.base import Context
    from xvit.methods.tis import block_output_vectors

    debug = _fixture("tis", "debug_input0_pred")
    model, x = ref.reference_model(), ref.inputs()[0]
    adapter = get_adapter(model)
    _, points = block_output_vectors(Context(adapter, adapter.layout(x)), x)
    ref.assert_close_scaled(points[0], debug["tis.kmeans_input"])


# --- ViT-CX (../shared/reference/vit_cx): deterministic with noise sigma = 0, float32 ---


@pytest.mark.parametrize("i", range(4))
def test_vit_cx_sigma0_float32(i):
    from xvit.adapters import get_adapter
    from xvit.methods.base import Context
    from xvit.methods.vit_cx import ViTCX, cosine_distance
    from xvit.utils.maps import normalise_maps

    stored = _fixture("vit_cx")
    model, x = ref.reference_model(), ref.inputs()[i]
    targets = stored[f"in{i}.targets"][None]
    e = xvit.explain(model, x, "vit_cx", target=targets, sigma=0.0)
    for k, which in enumerate(("pred", "other")):
        ref.assert_close_scaled(e.raw[0, k], stored[f"in{i}.{which}.vit_cx"])
        raw = e.raw[0, k]
        expected = stored[f"in{i}.{which}.vit_cx"]
        torch.testing.assert_close(normalise_maps(raw.flatten(), 1), normalise_maps(expected.flatten(), 1), rtol=0,
                                   atol=1e-4)
    assert e.meta["n_clusters"].tolist() == stored[f"in{i}.vit_cx_n_clusters"].tolist()
    # the intermediate steps: distances, the partition of the channels, the masks and their scores
    adapter = get_adapter(model)
    ctx = Context(adapter, adapter.layout(x))
    features = ctx.record(x, None, modules={"f": model.blocks[-1].norm1}).outputs["f"][0]
    masks = ViTCX().cluster_masks(ctx, features, (224, 224))
    ref.assert_close_scaled(masks.sum((1, 2)), stored[f"in{i}.vit_cx_mask_sums"])
    ref.assert_close_scaled(masks.sum(0), stored[f"in{i}.vit_cx_coverage"])
    with torch.no_grad():
        ref.assert_close_scaled(model(x * masks[:, None]).softmax(1), stored[f"in{i}.vit_cx_probs_masked"])
    grid = features[1:].T.reshape(96, 14, 14)
    channels = normalise_maps(torch.nn.functional.interpolate(grid[None], size=(224, 224), mode="bilinear")[0]
                              .flatten(1), 1)
    torch.testing.assert_close(cosine_distance(channels).float(), stored[f"in{i}.vit_cx_distance"], rtol=0, atol=1e-5)


# --- R-Cut (../shared/reference/rcut), float32 (the cut itself runs in float64) ---
# in3's graphs at the default thresholds are degenerate (every cosine above tau): its Fiedler vectors, bipartitions
# and maps are arbitrary (README), so only its eigenvalues, scores, weights and base_cam are compared, and the
# method must flag it.


def _cut_keys(stored, prefix, cut, n):
    ref.assert_close_scaled(cut.fiedler[n], stored[f"{prefix}_fiedler"])
    assert torch.equal(cut.bipartition[n].reshape(stored[f"{prefix}_bipartition"].shape),
                       stored[f"{prefix}_bipartition"])


@pytest.mark.parametrize("i", range(4))
def test_rcut_float32(i):
    from xvit.adapters import get_adapter
    from xvit.methods.base import Context
    from xvit.methods.rcut import RCut, normalized_cut

    stored = _fixture("rcut")
    model, x = ref.reference_model(), ref.inputs()[i]
    targets = stored[f"in{i}.targets"][None]
    adapter = get_adapter(model)
    ctx = Context(adapter, adapter.layout(x))
    rec = ctx.record(x, None, modules={"f": model.blocks[-1].norm1})
    features, logits = rec.outputs["f"][:, 1:], rec.logits
    scores = RCut(weighting="score_raw").channel_weights(ctx, x, features, logits, targets)[0][0]  # (2, D)
    gradcam = RCut(weighting="gradcam").channel_weights(ctx, x, features, logits, targets)[0][0]
    # score_softmax is softmax_d of score_raw (tests/methods/test_rcut.py), which saves 96 masked passes here
    for weights, name in ((scores.softmax(-1), "rcut"), (gradcam, "rcut_gradcam")):
        tokens = weights[:, None, :] * features[0]  # (2 targets, N, D)
        for tau, suffix in ((0.2, ""), (0.7, "_tau07")):
            cut = normalized_cut(tokens, tau)
            assert bool(cut.degenerate.all()) == (i == 3 and tau == 0.2)
            for k, which in enumerate(("pred", "other")):
                prefix = f"in{i}.{which}.{name}{suffix}"
                ref.assert_close_scaled(cut.eigvals[k], stored[f"{prefix}_eigvals"])
                if i != 3 or tau == 0.7:
                    _cut_keys(stored, prefix, cut, k)
                if tau == 0.2:
                    ref.assert_close_scaled(weights[k], stored[f"in{i}.{which}.{name}_weights"])
                    ref.assert_close_scaled(tokens[k].sum(-1), stored[f"in{i}.{which}.{name}_base_cam"])
    for k, which in enumerate(("pred", "other")):
        ref.assert_close_scaled(scores[k], stored[f"in{i}.{which}.rcut_scores"])
    for tau, suffix in ((0.25, ""), (0.7, "_tau07")):
        cut = normalized_cut(features, tau)
        ref.assert_close_scaled(cut.eigvals[0], stored[f"in{i}.ncut{suffix}_eigvals"])
        if i != 3 or tau == 0.7:
            _cut_keys(stored, f"in{i}.ncut{suffix}", cut, 0)
    if i == 0:  # the public path: raw = y⁺, and the explainer's map is the reference's final map
        e = xvit.explain(model, x, "rcut", target=targets)
        assert not e.meta["degenerate"].any()
        for k, which in enumerate(("pred", "other")):
            ref.assert_close_scaled(e.raw[0, k], stored[f"in{i}.{which}.rcut_fiedler"].clamp(min=0))
            torch.testing.assert_close(e.maps[0, k], stored[f"in{i}.{which}.rcut_map"][0], rtol=0, atol=1e-5)
    if i == 3:  # the degenerate graph is flagged, with a warning
        with pytest.warns(RuntimeWarning, match="degenerate"):
            e = xvit.explain(model, x, "rcut", target=targets, output="ncut")
        assert e.meta["degenerate"].all()


def test_rcut_debug_graph():
    from xvit.methods.rcut import normalized_cut

    debug = _fixture("rcut", "debug_input0_pred")
    features = debug["rcut.features"].flatten(1).T  # (196, 96)
    cut = normalized_cut(features, 0.25)
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    affinity = torch.where(unit @ unit.T > 0.25, 1.0, 1e-5)
    torch.testing.assert_close(affinity.float(), debug["rcut.affinity_unweighted"])
    assert not cut.degenerate
