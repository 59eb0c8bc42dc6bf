"""Datasets as plug-ins (study/train/datasets.py): the shipped ones are ordinary registrations, a
user's loader or image folder is one registration, and what a loader returns is checked and sized
before it becomes float32 tensors; every mistake is one line."""
from __future__ import annotations

import pytest
import torch

from study.train import datasets
from study.train.data import evaluation_indices, load_dataset, train_val_split
from study.train.datasets import (DataNotFoundError, DatasetError, RawImages, dataset_names, register_dataset,
                                  register_image_folder, resolve_dataset)


@pytest.fixture(autouse=True)
def registry():
    """Each test's registrations are forgotten afterwards."""
    saved = dict(datasets._DATASETS)
    yield
    datasets._DATASETS.clear()
    datasets._DATASETS.update(saved)


def write_folder(root, sizes=None, classes=("circle", "square", "triangle"), shape=(3, 12, 10)):
    """An image folder root/{train,test}/<class>/*.png of random images; ``sizes`` overrides one file's shape."""
    from torchvision.io import encode_png

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("test", 3)):
        for c, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image = torch.randint(0, 255, shape, dtype=torch.uint8, generator=g)
                image[:, :2, :2] = 40 * c  # something class-specific
                (folder / f"{i:02d}.png").write_bytes(encode_png(image).numpy().tobytes())
    return root


def test_the_shipped_datasets_are_ordinary_registrations():
    assert dataset_names()[:3] == ["mnist", "fashion_mnist", "cifar10"]
    assert datasets.dataset_entry("cifar10").description.startswith("CIFAR-10")


def test_a_registered_loader_is_loaded_checked_and_normalized(tmp_path):
    @register_dataset("stripes", description="stripes")
    def load(root, download):
        x = torch.zeros(40, 5, 5, dtype=torch.uint8)
        x[20:, :, ::2] = 255
        y = torch.cat([torch.zeros(20), torch.ones(20)]).long()
        return (x, y), (x[::4], y[::4])  # [N, H, W]: one channel

    data = load_dataset("stripes", tmp_path)
    assert data.input_shape == (1, 5, 5) and data.num_classes == 2 and data.train_x.dtype == torch.float32
    assert abs(data.train_x.mean().item()) < 1e-5  # normalized by the training split's statistics
    assert "stripes" in dataset_names()
    register_dataset("stripes")(load)  # the same function again (a module imported twice): harmless


def test_a_dataset_may_fix_its_normalization_and_name_its_classes(tmp_path):
    @register_dataset("fixed_norm")
    def load(root, download):
        x = torch.full((10, 3, 4, 4), 255, dtype=torch.uint8)
        y = torch.arange(10) % 2
        return RawImages(x, y, x, y, classes=("a", "b", "c"), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    data = load_dataset("fixed_norm", tmp_path)
    assert data.num_classes == 3 and data.mean == (0.5, 0.5, 0.5)
    assert torch.allclose(data.train_x, torch.full_like(data.train_x, 2.0))  # (1 - 0.5) / 0.25


@pytest.mark.parametrize("returned, message", [
    (lambda: "nope", "its loader returned str"),
    (lambda: ((torch.zeros(4, 1, 2, 2, 2), torch.zeros(4).long()),) * 2, "must be [N, C, H, W]"),
    (lambda: ((torch.zeros(4, 1, 2, 2), torch.zeros(4)),) * 2, "integer labels"),
    (lambda: ((torch.zeros(4, 1, 2, 2), torch.zeros(3).long()),) * 2, "4 images but train_y 3 labels"),
    (lambda: ((torch.zeros(4, 1, 2, 2), torch.zeros(4).long()), (torch.zeros(4, 1, 3, 3), torch.zeros(4).long())),
     "one [C, H, W]"),
    (lambda: ((torch.zeros(4, 1, 2, 2, dtype=torch.int32), torch.zeros(4).long()),) * 2, "uint8 (0-255) or floats"),
    (lambda: RawImages(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 2, 3]), torch.zeros(4, 1, 2, 2),
                       torch.zeros(4).long(), classes=("a", "b")), "only 2 classes are named"),
    (lambda: ((torch.zeros(4, 1, 2, 2), -torch.ones(4).long()),) * 2, "negative labels"),
], ids=["not-raw", "rank", "float-labels", "lengths", "shapes", "dtype", "classes", "negative"])
def test_what_a_loader_returns_is_checked_in_one_line(returned, message, tmp_path):
    register_dataset("broken")(lambda root, download: returned())
    with pytest.raises(DatasetError, match="dataset 'broken'") as error:
        load_dataset("broken", tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(ValueError, match="mnist, fashion_mnist, cifar10"):
        resolve_dataset("svhn")
    with pytest.raises(DatasetError, match="registered twice"):
        register_dataset("mnist")(lambda root, download: None)


def test_a_dataset_over_the_memory_limit_is_refused_before_it_is_converted(tmp_path, monkeypatch):
    register_dataset("big")(lambda root, download: ((torch.zeros(100, 3, 8, 8, dtype=torch.uint8),
                                                     torch.zeros(100).long()),) * 2)
    monkeypatch.setenv("LEVELED_KD_DATA_LIMIT_GB", "0.0001")  # 100 kB; the dataset needs 153.6 kB as float32
    with pytest.raises(DatasetError, match=r"needs 0.0 GB .*200 images of 3x8x8.*LEVELED_KD_DATA_LIMIT_GB"):
        load_dataset("big", tmp_path)
    monkeypatch.setenv("LEVELED_KD_DATA_LIMIT_GB", "1")
    assert load_dataset("big", tmp_path).train_x.shape == (100, 3, 8, 8)


def test_an_image_folder_is_a_dataset_without_code(tmp_path):
    root = write_folder(tmp_path / "shapes")
    assert register_image_folder("shapes", root) == "shapes"
    register_image_folder("shapes", root)  # the same folder again: harmless
    data = load_dataset("shapes", tmp_path)
    assert data.input_shape == (3, 12, 10) and data.num_classes == 3
    assert data.train_y.tolist() == [0] * 6 + [1] * 6 + [2] * 6  # class-sorted, as it is read
    # evaluation subsets of a class-sorted folder are stratified samples, never prefixes
    rows = evaluation_indices(data.test_y, 6)
    assert torch.bincount(data.test_y[rows]).tolist() == [2, 2, 2]
    split = train_val_split(data, val_fraction=0.5)
    assert torch.bincount(data.train_y[split.val]).tolist() == [3, 3, 3]
    with pytest.raises(DatasetError, match="registered twice"):
        register_image_folder("shapes", root, resize=[8, 8])
    assert (root / ".train-tensors.pt").is_file()  # decoded once, kept beside the folder as uint8


def test_an_image_folder_cache_follows_its_files_and_resize(tmp_path):
    root = write_folder(tmp_path / "shapes")
    register_image_folder("shapes", root)
    assert len(load_dataset("shapes", tmp_path).train_y) == 18
    (root / "train" / "circle" / "00.png").unlink()  # the listing changed: decoded again
    assert len(load_dataset("shapes", tmp_path).train_y) == 17
    register_image_folder("small", root, resize=[6, 5])
    assert load_dataset("small", tmp_path).input_shape == (3, 6, 5)


def test_an_image_folder_s_mistakes_are_one_line(tmp_path):
    from torchvision.io import encode_png

    root = write_folder(tmp_path / "shapes")
    odd = torch.zeros(3, 7, 7, dtype=torch.uint8)
    (root / "train" / "square" / "99.png").write_bytes(encode_png(odd).numpy().tobytes())
    register_image_folder("odd_sizes", root)
    with pytest.raises(DatasetError, match=r"99.png is 7x7 but 00.png is 12x10 \(height x width, 3 channels\); give the image folder a resize"):
        load_dataset("odd_sizes", tmp_path)
    (root / "train" / "square" / "99.png").unlink()
    (root / "test" / "hexagon").mkdir()
    (root / "test" / "hexagon" / "0.png").write_bytes(encode_png(torch.zeros(3, 12, 10, dtype=torch.uint8)).numpy().tobytes())
    register_image_folder("test_only_class", root)
    with pytest.raises(DatasetError, match=r"class folders \['hexagon'\] that the training split does not have"):
        load_dataset("test_only_class", tmp_path)
    (root / "train" / "circle" / "broken.png").write_bytes(b"not an image")
    register_image_folder("undecodable", root)
    with pytest.raises(DatasetError, match="cannot decode .*broken.png"):
        load_dataset("undecodable", tmp_path)
    register_image_folder("nowhere", tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="needs train/<class>/ and test/<class>/"):
        load_dataset("nowhere", tmp_path)


def test_dataset_path_is_its_image_folder(tmp_path):
    root = write_folder(tmp_path / "my_shapes")
    assert resolve_dataset(str(root)) == "my_shapes"
    assert resolve_dataset("mnist") == "mnist"
    with pytest.raises(DataNotFoundError, match="no such folder"):
        resolve_dataset(str(tmp_path / "missing"))


def test_torchvision_datasets_by_class_name(mnist_root):
    name = resolve_dataset("torchvision:MNIST")
    assert name == "torchvision-mnist"
    data = load_dataset(name, mnist_root, download=False)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and len(data.train_y) == 2000
    with pytest.raises(DataNotFoundError, match="torchvision-svhn not found under"):
        load_dataset(resolve_dataset("torchvision:SVHN"), mnist_root, download=False)
    with pytest.raises(DatasetError, match="torchvision has no dataset 'Nope'"):
        load_dataset(resolve_dataset("torchvision:Nope"), mnist_root, download=False)


def test_one_folder_of_classes_is_split_and_one_class_is_refused(tmp_path):
    root = write_folder(tmp_path / "pool")
    for split in ("train", "test"):  # one folder of class folders, no train/ and test/
        for cls in (root / split).iterdir():
            for image in cls.iterdir():
                target = root / cls.name / f"{split}-{image.name}"
                target.parent.mkdir(exist_ok=True)
                image.rename(target)
            cls.rmdir()
        (root / split).rmdir()
    data = load_dataset(resolve_dataset(f"imagefolder:{root}"), tmp_path)
    assert torch.bincount(data.test_y).tolist() == [2, 2, 2] and torch.bincount(data.train_y).tolist() == [7, 7, 7]
    lonely = write_folder(tmp_path / "lonely", classes=("only",))
    register_image_folder("lonely", lonely)
    with pytest.raises(DatasetError, match=r"has 1 class folder\(s\) \['only'\]; a classifier needs at least two"):
        load_dataset("lonely", tmp_path)


def test_a_loader_function_by_module_and_name(tmp_path, monkeypatch):
    (tmp_path / "lkd_data_pkg.py").write_text(
        "import torch\n"
        "def load(root, download):\n"
        "    x = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)\n"
        "    return (x, torch.tensor([0, 1] * 3)), (x, torch.tensor([0, 1] * 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_dataset("lkd_data_pkg:load") == "lkd_data_pkg-load"
    assert load_dataset("lkd_data_pkg-load", tmp_path).num_classes == 2
    with pytest.raises(DatasetError, match="module 'lkd_data_pkg' has no function 'lod'"):
        resolve_dataset("lkd_data_pkg:lod")


def test_the_shift_grid_scales_with_the_image_side_beyond_32_px_and_can_be_set_per_dataset(tmp_path):
    from study.train.data import DEFAULT_MAGNITUDES, shift_magnitudes_for
    from study.train.evaluation import TranslationResult

    assert shift_magnitudes_for(28, 28) == shift_magnitudes_for(32, 32) == DEFAULT_MAGNITUDES == (2, 4, 6, 8)
    assert shift_magnitudes_for(64, 80) == (4, 8, 12, 16) and shift_magnitudes_for(224, 224) == (14, 28, 42, 56)
    register_image_folder("big", write_folder(tmp_path / "big", shape=(3, 64, 64)))
    big = load_dataset("big", tmp_path)
    assert len(big.shifts) == 33 and {max(abs(dx), abs(dy)) for dx, dy in big.shifts} == {0, 4, 8, 12, 16}
    # small shifts are the grid's two smallest magnitudes: 4 and 8 px here, as 2 and 4 px are of 32 px
    result = TranslationResult({s: float(max(abs(s[0]), abs(s[1])) in (4, 8)) for s in big.shifts})
    assert result.small_shift_acc == 1.0 and result.translated_acc == 0.5
    register_image_folder("set", write_folder(tmp_path / "set", shape=(3, 64, 64)), shift_magnitudes=[3, 1])
    assert {max(abs(dx), abs(dy)) for dx, dy in load_dataset("set", tmp_path).shifts} == {0, 1, 3}
    for bad, message in (([0, 2], "distinct positive"), ([2, 2], "distinct positive"), ([70], "out of its frame")):
        register_image_folder(f"bad{bad[0]}{len(bad)}", write_folder(tmp_path / f"bad{bad[0]}{len(bad)}",
                                                                     shape=(3, 64, 64)), shift_magnitudes=bad)
        with pytest.raises(DatasetError, match=message):
            load_dataset(f"bad{bad[0]}{len(bad)}", tmp_path)
