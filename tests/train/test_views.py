"""Views for function matching (study/train/views.py): every registered view keeps content where it is
(blob images; a deliberately shifting, jittering or flipping view is caught by the same check),
views are fixed by their seed, and the trainer builds a step's views from their parameters."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from study.train.views import (NOISE_BANK, PARAM_PREFIX, Erase, View, ViewBatches, ViewSet, view_class,
                               view_names)

MEAN, STD = 0.1307, 0.3081  # MNIST's: the blob images are normalized like the data
FILL = torch.tensor([-MEAN / STD])  # black
#: Centroids are taken over what rises this far above black (normalized units, ~0.46 of full
#: intensity): zero-mean noise on the black background would otherwise dominate the centroid
#: without moving any content. Thresholding commutes with erasing (a 0/1 mask) and keeps the
#: point symmetry of a mix of point-symmetric images, so those checks stay exact.
THRESHOLD = 1.5
VIEWS_PER_IMAGE = 256
#: Each image's mean displacement over its views (a systematic shift or a flip), the RMS of the
#: displacements (random shifts or crops average out in the mean, not here), the largest one.
MEAN_TOL, RMS_TOL, MAX_TOL = 0.2, 0.6, 1.6


def blob(centre: tuple[float, float], sigma: float, size: int = 28) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    return torch.exp(-((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) / (2 * sigma ** 2))


def image(parts) -> torch.Tensor:
    """A normalized [1, H, W] image of Gaussian bumps (intensity 0..1) on black."""
    raw = sum(blob(c, s) for c, s in parts).clamp(max=1.0)
    return ((raw - MEAN) / STD).unsqueeze(0)


def blobs_around(c: tuple[float, float]) -> torch.Tensor:
    """Images of one, two and four blobs of several sizes, each point-symmetric about ``c``
    (so any mix of them is too, and its centroid is exactly ``c``), off the canvas' centre (a flip moves them)."""
    cy, cx = c
    parts = [[(c, 2.0)], [(c, 3.0)], [(c, 4.0)],
             [((cy - 3, cx - 3), 2.0), ((cy + 3, cx + 3), 2.0)],
             [((cy - 4, cx), 2.0), ((cy + 4, cx), 2.0), ((cy, cx - 4), 2.0), ((cy, cx + 4), 2.0)]]
    return torch.stack([image(p) for p in parts])


def centroid(images: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """[N, 2] (row, column) intensity centroids of what lies ``threshold`` above black; NaN where nothing does."""
    mass = torch.relu((images - FILL.view(1, -1, 1, 1)).sum(1) - threshold)
    h, w = mass.shape[-2:]
    total = mass.sum((1, 2))
    rows = (mass.sum(2) * torch.arange(h)).sum(1) / total
    cols = (mass.sum(1) * torch.arange(w)).sum(1) / total
    return torch.where((total > 1e-3).unsqueeze(1), torch.stack([rows, cols], 1), torch.nan)


def displacements(view: View, images: torch.Tensor, k: int = VIEWS_PER_IMAGE, seed: int = 0) -> torch.Tensor:
    """[N, k, 2]: how far each view's centroid lies from that of the content the view keeps (the
    image itself, or what an erase box leaves: ``image * (1 - mask)``); NaN where nothing is left."""
    per, shared = view.draw(len(images), k, tuple(images.shape[1:]), np.random.default_rng(seed))
    found = []
    for j in range(k):
        params = {name: value[:, j] for name, value in per.items()}
        out = view.apply(images, params, shared, images, FILL)
        kept = view.kept(params, tuple(images.shape[1:]))
        reference = images if kept is None else FILL.view(1, -1, 1, 1) + (images - FILL.view(1, -1, 1, 1)) * kept
        found.append(centroid(out) - centroid(reference))
    return torch.stack(found, 1)


def assert_content_stays(view: View, images: torch.Tensor) -> None:
    d = displacements(view, images)
    checked = ~torch.isnan(d).any(-1)
    assert checked.float().mean() > 0.5, f"{view.name}: too few views keep anything to locate"
    norms = torch.where(checked, d.norm(dim=-1), 0.0)
    mean = torch.stack([d[i][checked[i]].mean(0).norm() for i in range(len(d))])
    rms = (norms.pow(2).sum(1) / checked.sum(1)).sqrt()
    assert mean.max() < MEAN_TOL, f"{view.name}: content moves on average by {mean.max():.2f} px"
    assert rms.max() < RMS_TOL, f"{view.name}: content moves by {rms.max():.2f} px (RMS over views)"
    assert norms.max() < MAX_TOL, f"{view.name}: a view moves content by {norms.max():.2f} px"


@pytest.mark.parametrize("name", view_names())
@pytest.mark.parametrize("centre", [(10.0, 17.0), (17.0, 9.0)])
def test_no_registered_view_moves_content(name, centre):
    images = blobs_around(centre)
    assert torch.allclose(centroid(images), torch.tensor(centre).expand(len(images), 2), atol=1e-4)
    assert_content_stays(view_class(name)(), images)


class Shift(View):
    """Not a view this project may have: every view moves the image 2 px to the right."""

    name = "shift"

    def draw(self, n, k, image_shape, rng):
        return {"dx": torch.full((n, k), 2)}, {}

    def apply(self, x, per, shared, images, fill):
        return torch.roll(x, shifts=int(per["dx"][0]), dims=-1)


class Jitter(View):
    """Random translations of 1-2 px in any compass direction: zero on average, caught by the RMS."""

    name = "jitter"

    def draw(self, n, k, image_shape, rng):
        return {"d": torch.from_numpy(rng.integers(-2, 3, (n, k, 2)))}, {}

    def apply(self, x, per, shared, images, fill):
        return torch.stack([torch.roll(img, shifts=(int(dy), int(dx)), dims=(-2, -1))
                            for img, (dy, dx) in zip(x, per["d"].tolist())])


class Flip(View):
    """A horizontal flip: no pixel shift on average over images centred on the canvas, but these are not."""

    name = "flip"

    def draw(self, n, k, image_shape, rng):
        return {}, {}

    def apply(self, x, per, shared, images, fill):
        return torch.flip(x, dims=[-1])


@pytest.mark.parametrize("fake", [Shift, Jitter, Flip])
def test_the_no_shift_check_catches_views_that_move_content(fake):
    with pytest.raises(AssertionError, match="moves"):
        assert_content_stays(fake(), blobs_around((10.0, 17.0)))


def test_a_mixup_view_keeps_each_image_where_it_was():
    """Partners of different places: a mix's centroid is the images' centroids weighted by their mixed
    masses, lam * m_i * c_i + (1 - lam) * m_j * c_j over the mixed mass (no threshold: linear)."""
    images = torch.stack([image([(c, 2.5)]) for c in [(8, 8), (20, 9), (12, 21), (18, 18), (6, 14)]])
    view = view_class("mixup")()
    per, shared = view.draw(len(images), 32, tuple(images.shape[1:]), np.random.default_rng(3))
    masses = (images - FILL.view(1, -1, 1, 1)).sum((1, 2, 3))
    own = centroid(images, threshold=0.0)
    for j in range(32):
        params = {name: value[:, j] for name, value in per.items()}
        lam, partner = params["lam"].unsqueeze(1), params["partner"]
        assert (partner != torch.arange(len(images))).all()  # never mixed with itself
        weight_i, weight_j = lam * masses.unsqueeze(1), (1 - lam) * masses[partner].unsqueeze(1)
        expected = (weight_i * own + weight_j * own[partner]) / (weight_i + weight_j)
        found = centroid(view.apply(images, params, shared, images, FILL), threshold=0.0)
        torch.testing.assert_close(found, expected, atol=1e-3, rtol=0)


def test_mixup_labels_are_mixed_and_the_hard_label_is_the_heavier_one():
    view = view_class("mixup")()
    labels = torch.tensor([0, 1, 2, 3])
    per = {"partner": torch.tensor([1, 2, 3, 0]), "lam": torch.tensor([0.7, 0.2, 0.5, 1.0])}
    hard, soft = view.labels(labels, per, labels, 4)
    assert hard.tolist() == [0, 2, 2, 3]
    torch.testing.assert_close(soft[0], torch.tensor([0.7, 0.3, 0.0, 0.0]))
    torch.testing.assert_close(soft.sum(1), torch.ones(4))


def test_erase_sets_exactly_its_box_to_black_within_its_area_range():
    images = blobs_around((14.0, 14.0))
    view = Erase({"erase_min": 0.1, "erase_max": 0.2})
    per, shared = view.draw(len(images), 64, tuple(images.shape[1:]), np.random.default_rng(0))
    top, left, h, w = per["box"].unbind(-1)
    area = (h * w).float() / (28 * 28)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 28).all()
    assert area.min() > 0.07 and area.max() < 0.25  # rounding to whole pixels
    params = {name: value[:, 5] for name, value in per.items()}
    out = view.apply(images, params, shared, images, FILL)
    inside = Erase.mask(params["box"], 28, 28)
    assert torch.equal(out[inside.expand_as(out)], FILL.expand(int(inside.sum())))
    assert torch.equal(out[~inside.expand_as(out)], images[~inside.expand_as(images)])
    with pytest.raises(ValueError, match="erase_min"):
        Erase({"erase_min": 0.5, "erase_max": 0.2})


def test_noise_views_add_noise_of_the_asked_std_from_a_fixed_bank():
    views = ViewSet.create("noise", k=8, seed=1, noise_std=0.25)
    params = views.draw(50, (1, 28, 28))
    assert params.shared["noise"].shape == (NOISE_BANK, 1, 28, 28) and params.per["noise"].shape == (50, 8)
    x = torch.zeros(50, 1, 28, 28)
    out = views.build(x, params.of(slice(None), 3), params.shared, x, FILL)
    assert abs(out.std().item() - 0.25) < 0.01 and abs(out.mean().item()) < 0.01


def test_views_are_fixed_by_their_seed_and_keyed_by_everything_that_defines_them():
    a, b = ViewSet.create("mixup", k=4, seed=0), ViewSet.create("mixup", k=4, seed=0)
    pa, pb = a.draw(100, (1, 28, 28)), b.draw(100, (1, 28, 28))
    assert all(torch.equal(pa.per[n], pb.per[n]) for n in pa.per) and pa.per["lam"].shape == (100, 4)
    other = ViewSet.create("mixup", k=4, seed=1).draw(100, (1, 28, 28))
    assert not torch.equal(other.per["lam"], pa.per["lam"])
    tags = {a.tag, ViewSet.create("mixup", k=4, seed=1).tag, ViewSet.create("mixup", k=2).tag,
            ViewSet.create("mixup", mixup_alpha=0.2).tag, ViewSet.create("noise").tag}
    assert len(tags) == 5 and a.tag == b.tag
    # another view's parameters are not part of a view set (they cannot change its cache)
    assert ViewSet.create("mixup", noise_std=3.0) == a
    with pytest.raises(ValueError, match="views_k"):
        ViewSet.create("mixup", k=0)
    with pytest.raises(ValueError, match="unknown view"):
        ViewSet.create("shift")


def make_batches(views: ViewSet, n: int = 12):
    """A :class:`ViewBatches` over ``n`` blob images, and a batch of all of them with teacher outputs
    that say which (image, view) they belong to: ``logits[i, k] = 100 * i + k``."""
    images = torch.cat([blobs_around((10.0, 17.0)), blobs_around((17.0, 9.0)), blobs_around((14.0, 14.0))])[:n]
    labels = torch.arange(n) % 10
    params = views.draw(n, tuple(images.shape[1:]))
    transform = ViewBatches(views, params, images, labels, FILL, 10)
    code = (100 * torch.arange(n).view(n, 1) + torch.arange(views.k).view(1, views.k)).float()
    batch = {"x": images, "y": labels, "teacher_logits": [code.unsqueeze(-1).expand(n, views.k, 10)],
             "teacher_features": [code.unsqueeze(-1).expand(n, views.k, 3)], **transform.per_sample()}
    return transform, batch, params, images


@pytest.mark.parametrize("name", view_names())
def test_a_batch_becomes_one_view_per_sample_with_the_teacher_outputs_of_that_view(name):
    views = ViewSet.create(name, k=5, seed=2)
    transform, batch, params, images = make_batches(views)
    out = transform(batch, 0, torch.Generator().manual_seed(7))
    assert not [key for key in out if key.startswith(PARAM_PREFIX)]  # consumed
    chosen = out["teacher_logits"][0][:, 0].long() % 100  # the view each sample got, from its teacher output
    assert torch.equal(out["teacher_logits"][0][:, 0].long() // 100, torch.arange(len(images)))
    assert len(set(chosen.tolist())) > 1
    torch.testing.assert_close(out["teacher_features"][0][:, 0], out["teacher_logits"][0][:, 0])
    rows = torch.arange(len(images))
    expected = views.build(images, params.of(rows, chosen), params.shared, images, FILL)
    torch.testing.assert_close(out["x"], expected)  # the student sees the view the teacher's output is of
    assert ("y_soft" in out) == (name == "mixup")
    again = transform(dict(batch), 0, torch.Generator().manual_seed(7))
    assert torch.equal(again["x"], out["x"])  # the generator decides, nothing else


def test_mixup_ce_is_the_lambda_weighted_ce_of_both_labels():
    from losses import LeveledKDConfig, LeveledKDLoss
    from losses.cross_entropy import cross_entropy

    views = ViewSet.create("mixup", k=3)
    transform, batch, params, images = make_batches(views)
    out = transform(batch, 0, torch.Generator().manual_seed(0))
    logits = torch.randn(len(images), 10)
    loss = LeveledKDLoss(LeveledKDConfig(alpha=1.0))
    ce = loss((logits, torch.zeros(len(images), 4)), out["y"], soft_targets=out["y_soft"])["ce"]
    chosen = out["teacher_logits"][0][:, 0].long() % 100
    own = batch["y"]
    partner = batch["y"][params.of(torch.arange(len(images)), chosen)["partner"]]
    lam = params.of(torch.arange(len(images)), chosen)["lam"]
    expected = torch.stack([lam[i] * cross_entropy(logits[i:i + 1], own[i:i + 1])
                            + (1 - lam[i]) * cross_entropy(logits[i:i + 1], partner[i:i + 1])
                            for i in range(len(images))]).mean()
    torch.testing.assert_close(ce, expected)

