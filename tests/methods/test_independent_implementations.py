"""Parity with independent implementations from PyPI on the same model and inputs."""

import numpy as np
import pytest
import torch

import xvit
from tests.tiny_models import make


@pytest.fixture(scope="module")
def model():
    return make("xvit")


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(3)
    return torch.randn(2, 3, 32, 32)


def test_input_x_gradient_matches_captum(model, x):
    captum = pytest.importorskip("captum.attr")
    theirs = captum.InputXGradient(model).attribute(x, target=[1, 4]).sum(1)
    ours = xvit.explain(model, x, "input_x_gradient", target=[1, 4]).raw[:, 0]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_matches_captum(model, x, method):
    captum = pytest.importorskip("captum.attr")
    n = 16
    theirs = captum.IntegratedGradients(model).attribute(x, target=[2, 0], n_steps=n, method=method).sum(1)
    if method == "riemann_trapezoid":
        # Captum's trapezoid weights are 1/n (halved at the ends), which sum to (n-1)/n instead of 1;
        # xvit uses the trapezoid rule's 1/(n-1).
        theirs = theirs * n / (n - 1)
    ours = xvit.explain(model, x, "integrated_gradients", target=[2, 0], n_steps=n, approximation=method)
    torch.testing.assert_close(ours.raw[:, 0], theirs, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_completeness_gap_shrinks_with_steps(x):
    from xvit.models.vit import create_vit

    torch.manual_seed(0)
    smooth = create_vit("nano", img_size=32, patch_size=8, num_classes=5, embed_dim=48, depth=2).eval()
    gaps = [xvit.explain(smooth, x, "integrated_gradients", n_steps=n, approximation="riemann_trapezoid")
            .meta["completeness_gap"].abs().max().item() for n in (2, 8, 64)]
    assert gaps[2] < gaps[1] < gaps[0]


def test_smoothgrad_matches_captum_noise_tunnel(model, x):
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(7)
    theirs = captum.NoiseTunnel(captum.Saliency(model)).attribute(
        x[:1], nt_type="smoothgrad", nt_samples=6, stdevs=0.3, target=3).sum(1)
    ours = xvit.explain(model, x[:1], "smoothgrad", target=3, n_samples=6, stdevs=0.3, seed=7)
    torch.testing.assert_close(ours.raw[:, 0], theirs, rtol=1e-4, atol=1e-6)


def test_gradcam_matches_pytorch_grad_cam_on_timm_vit():
    pytest.importorskip("timm")
    gradcam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = make("timm_vit")
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32)

    def reshape(t, h=4, w=4):  # grad-cam's documented ViT transform for this model's 4x4 grid
        return t[:, 1:].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(3)]
    with gradcam.GradCAM(model=model, target_layers=[model.blocks[-1].norm1], reshape_transform=reshape) as cam:
        theirs = cam(input_tensor=x, targets=targets)
    ours = xvit.explain(model, x, "gradcam", target=targets)  # grad-cam target objects are accepted as-is
    assert ours.targets[:, 0].tolist() == [1, 3]
    # grad-cam scales each layer's map, resizes it, and scales the layer mean again
    ours_scaled = scale_cam_image(scale_cam_image(ours.raw[:, 0].numpy(), target_size=(32, 32)))
    np.testing.assert_allclose(ours_scaled, theirs, rtol=1e-4, atol=1e-5)
    assert ours.raw.abs().sum() > 0
