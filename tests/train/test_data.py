import pytest
import torch

from study.train.data import (EVAL_SEED, DataNotFoundError, ImageData, evaluation_indices, load_dataset, shift_grid,
                        shift_name, stratified_indices, train_val_split, translate, translated_views)
from study.distill.spec import split_images


def one_pixel(y=10, x=12, size=28):
    img = torch.zeros(1, 1, size, size)
    img[0, 0, y, x] = 1.0
    return img


@pytest.mark.parametrize("dx,dy", [(2, 0), (0, -4), (3, 5), (-6, -6), (8, -2)])
def test_single_pixel_moves_exactly(dx, dy):
    moved = translate(one_pixel(), dx, dy)
    assert moved.sum() == 1.0
    assert torch.nonzero(moved[0, 0]).tolist() == [[10 + dy, 12 + dx]]


def test_pixels_shifted_out_are_gone_and_fill_is_zero():
    img = torch.rand(1, 1, 8, 8) + 1.0  # strictly positive
    moved = translate(img, 3, 0)
    assert torch.equal(moved[..., :, :3], torch.zeros(1, 1, 8, 3))
    assert torch.equal(moved[..., :, 3:], img[..., :, :5])
    assert translate(translate(img, 8, 0), -8, 0).abs().sum() == 0  # shifted out entirely: gone for good


def test_fill_per_channel_and_determinism():
    img = torch.zeros(2, 3, 6, 6)
    fill = torch.tensor([1.0, 2.0, 3.0])
    moved = translate(img, 0, 2, fill)
    assert torch.equal(moved[:, :, :2, :], fill.view(1, 3, 1, 1).expand(2, 3, 2, 6))
    assert torch.equal(moved[:, :, 2:, :], torch.zeros(2, 3, 4, 6))
    assert torch.equal(translated_views(img, shift_grid(), fill), translated_views(img, shift_grid(), fill))


def test_default_grid_is_33_shifts_in_8_directions():
    grid = shift_grid()
    assert grid[0] == (0, 0) and len(grid) == 33 and len(set(grid)) == 33
    assert {max(abs(dx), abs(dy)) for dx, dy in grid[1:]} == {2, 4, 6, 8}
    assert (8, -8) in grid and (-2, 0) in grid
    assert shift_name((2, -2)) == "dx_2_dy_-2"
    with pytest.raises(ValueError):
        shift_grid([0, 2])


def test_batched_views_match_single_translations():
    imgs = torch.rand(5, 1, 12, 12)
    views = translated_views(imgs, [(0, 0), (2, -1), (-3, 3)])
    assert views.shape == (3, 5, 1, 12, 12)
    assert torch.equal(views[0], imgs)
    assert torch.equal(views[2], translate(imgs, -3, 3))


def test_stratified_subset_is_seeded_and_balanced():
    labels = torch.arange(1000) % 10
    a, rest = stratified_indices(labels, count=200, seed=3)
    b, _ = stratified_indices(labels, count=200, seed=3)
    c, _ = stratified_indices(labels, count=200, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(labels[a]).tolist() == [20] * 10
    assert len(set(a.tolist()) | set(rest.tolist())) == 1000 and not set(a.tolist()) & set(rest.tolist())


def test_loads_mnist_layout_and_splits(mnist):
    assert mnist.input_shape == (1, 28, 28) and mnist.num_classes == 10
    assert abs(mnist.train_x.mean().item()) < 1e-3  # normalized
    assert mnist.fill.shape == (1,) and mnist.fill.item() < 0
    split = train_val_split(mnist, train_subset=500, seed=1)
    assert len(split.train) == 500 and len(split.val) == 200
    assert not set(split.train.tolist()) & set(split.val.tolist())
    # the validation split does not depend on the student's seed or subset
    assert torch.equal(train_val_split(mnist, seed=7).val, split.val)


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="--data-root"):
        load_dataset("fashion_mnist", tmp_path, download=False)
    with pytest.raises(ValueError, match="mnist, fashion_mnist, cifar10"):
        load_dataset("svhn", tmp_path)


def test_cifar10_jpeg_image_folder(tmp_path):
    from torchvision.io import encode_jpeg

    for split, n in (("train", 3), ("test", 2)):
        for cls in ("airplane", "automobile"):
            folder = tmp_path / "cifar10-jpeg" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                img = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
                (folder / f"{i}.jpg").write_bytes(encode_jpeg(img).numpy().tobytes())
    data = load_dataset("cifar10", tmp_path, download=False)
    assert data.train_x.shape == (6, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1] and len(data.mean) == 3


# ----------------------------------------------------------------------------- evaluation subsets

def class_sorted_data(sizes=(37, 52, 41, 60, 33, 48, 55, 39, 44, 51)) -> ImageData:
    """A dataset stored class by class (as an image folder is read), with unequal class sizes,
    in both its training and its test split."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    images = torch.rand(len(labels), 1, 6, 6)
    return ImageData("sorted", images, labels, images.clone(), labels.clone(), len(sizes), (0.5,), (0.25,))


def assert_in_proportion(subset_labels: torch.Tensor, population: torch.Tensor) -> None:
    """Every class of ``population`` is in the subset, within one image of its proportional share."""
    classes = int(population.max()) + 1
    share = torch.bincount(population, minlength=classes).double() * len(subset_labels) / len(population)
    counts = torch.bincount(subset_labels, minlength=classes).double()
    assert ((counts - share).abs() < 1.0 + 1e-9).all(), (counts.tolist(), share.tolist())


def test_no_evaluation_subset_of_a_class_sorted_dataset_is_biased_by_its_order():
    """Test and validation subsets of every size hold every class in proportion: a prefix of this
    dataset would hold the first classes only."""
    data = class_sorted_data()
    split = train_val_split(data, val_fraction=0.5)
    assert torch.equal(split_images(data, split, "test", None), torch.arange(len(data.test_y)))
    for size in range(10, len(data.test_y) + 1, 7):
        test = split_images(data, split, "test", size)
        assert len(test) == size and len(set(test.tolist())) == size
        assert_in_proportion(data.test_y[test], data.test_y)
        assert torch.equal(test, split_images(data, split, "test", size))  # the same images every time
    for size in range(10, len(split.val) + 1, 5):
        val = split_images(data, split, "val", size)
        assert len(val) == size and set(val.tolist()) <= set(split.val.tolist())
        assert_in_proportion(data.train_y[val], data.train_y[split.val])
    assert torch.equal(split_images(data, split, "val", 10**6), split.val)  # more than there are: all of them


def test_evaluation_indices_are_seeded_and_refuse_nonsense():
    labels = class_sorted_data().test_y
    assert torch.equal(evaluation_indices(labels, 100), evaluation_indices(labels, 100, seed=EVAL_SEED))
    assert not torch.equal(evaluation_indices(labels, 100), evaluation_indices(labels, 100, seed=EVAL_SEED + 1))
    assert torch.equal(evaluation_indices(labels, 0), torch.arange(len(labels)))
    with pytest.raises(ValueError, match="positive size"):
        evaluation_indices(labels, -3)
