import pytest
import torch

from xvit.evaluate import Perturbation, perturbation_curve

from .stubs import HALF, data, first_row_model, tiny_cnn

# 4x4 white image; map ranks the first row highest: (0,0)=16, (0,1)=15, (0,2)=14, (0,3)=13, then 12..1.
X = torch.ones(1, 3, 4, 4)
MAP = torch.arange(16, 0, -1, dtype=torch.float32).view(1, 4, 4)
LABEL0 = torch.tensor([0])


def test_positive_hand_computed():
    # int(16p) for p = .1….9 removes 1, 3, 4, 8, 9, 11, 12, 14 pixels; class 0 survives one black pixel in
    # the first row (mean 0.5 > 0.1) but not three (mean -0.5).
    r = perturbation_curve(first_row_model, X, MAP, LABEL0, mean=HALF, std=HALF, mode="positive")
    assert r.curves.tolist() == [[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]]
    assert r.value == pytest.approx(15.0)  # 100 * (0.1 * 1 + 0.1 * 0.5)
    assert r.higher_is_better is False
    assert r.summary["clean_accuracy"] == 1.0


def test_negative_hand_computed():
    # Least relevant first: the first row is reached only at 14 pixels (p = 0.9), which blackens two of it.
    r = perturbation_curve(first_row_model, X, MAP, LABEL0, mean=HALF, std=HALF, mode="negative")
    assert r.curves.tolist() == [[1, 1, 1, 1, 1, 1, 1, 1, 1, 0]]
    assert r.value == pytest.approx(85.0)  # 100 * (0.8 + 0.1 * 0.5)
    assert r.higher_is_better is True


def test_ties_break_on_flat_index_in_both_modes():
    flat = torch.zeros(1, 4, 4)  # every pixel tied: removal follows the flat index, first row first
    for mode in ("positive", "negative"):
        r = perturbation_curve(first_row_model, X, flat, LABEL0, mean=HALF, std=HALF, mode=mode)
        assert r.curves.tolist() == [[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]], mode


def test_target_curve_and_forward_passes():
    r = perturbation_curve(first_row_model, X.repeat(2, 1, 1, 1), MAP.repeat(2, 1, 1), torch.tensor([0, 1]),
                           targets=torch.tensor([1, 1]), mean=HALF, std=HALF)
    assert r.curves.tolist() == [[1, 1, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]]
    assert r.per_image["curves_target"].tolist() == [[0, 0, 1, 1, 1, 1, 1, 1, 1, 1]] * 2
    assert r.summary["auc_target"] == pytest.approx(100 * (0.9 - 0.15))
    assert r.forward_passes == 2 * 10
    assert Perturbation(mean=HALF, std=HALF).forward_passes_per_image(4, 4) == 10
    assert r.scores.tolist() == pytest.approx([15.0, 75.0])


def test_black_uses_the_checkpoint_normalisation():
    seen = []

    def model(x):
        seen.append(x)
        return first_row_model(x)

    perturbation_curve(model, X, MAP, LABEL0, mean=(0.2, 0.4, 0.6), std=(0.5, 0.25, 0.2), fractions=(0.1,))
    removed = torch.cat(seen)[1, :, 0, 0]
    assert removed.tolist() == pytest.approx([-0.4, -1.6, -3.0])


def test_chunks_respect_batch_size_and_do_not_change_results():
    d = data(n=5)
    model = tiny_cnn()
    sizes = []

    def counting(x):
        sizes.append(x.shape[0])
        return model(x)

    small = perturbation_curve(counting, d["x"], d["maps"], d["labels"], mean=HALF, std=HALF, batch_size=7)
    assert max(sizes) <= 7 and sum(sizes) == 5 * 10
    big = perturbation_curve(model, d["x"], d["maps"], d["labels"], mean=HALF, std=HALF, batch_size=1000)
    assert torch.equal(small.curves, big.curves)


def test_shape_errors_name_the_fix():
    with pytest.raises(ValueError, match="Upsample"):
        Perturbation(mean=HALF, std=HALF).update(first_row_model, X, torch.zeros(1, 2, 2), LABEL0)
    with pytest.raises(ValueError, match="channels"):
        Perturbation(mean=(0.5,), std=(0.5,)).update(first_row_model, X, MAP, LABEL0)


def test_mean_substrate_fills_the_mean_colour():
    # 0 in normalised space: the first row keeps mean 0.25 > 0.1 after three removed pixels and falls at four.
    r = perturbation_curve(first_row_model, X, MAP, LABEL0, mean=HALF, std=HALF, substrate="mean")
    assert r.curves.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0, 0, 0]]
    assert r.value == pytest.approx(25.0)  # 100 * (0.1 + 0.1 + 0.1 * 0.5)
    assert r.summary["substrate"] == "mean"


def test_blur_substrate_fills_the_blurred_image():
    from xvit.perturb import Blur

    seen = []

    def model(x):
        seen.append(x)
        return first_row_model(x)

    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    r = perturbation_curve(model, x, MAP, LABEL0, mean=HALF, std=HALF, substrate="blur", fractions=(0.1,))
    blurred = Blur(11, 5.0, kernel="folded", padding="zeros").image(x)
    perturbed = torch.cat(seen)[1]
    torch.testing.assert_close(perturbed[:, 0, 0], blurred[0, :, 0, 0])  # the removed pixel
    torch.testing.assert_close(perturbed[:, 1:], x[0, :, 1:])  # the rest untouched
    assert r.summary["substrate"] == "blur"


def test_unknown_substrate_lists_the_choices():
    with pytest.raises(ValueError, match="black.*mean.*blur"):
        Perturbation(mean=HALF, std=HALF, substrate="noise")
