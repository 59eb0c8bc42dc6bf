"""Write CIFAR-10 as the image folder the example's space reads: data/cifar10/{train,test}/<class>/*.png.

    python prepare_data.py                               # torchvision's download (under --root), all 60,000 images
    python prepare_data.py --from-folder DIR             # an existing <DIR>/{train,test}/<class>/ folder, linked
    python prepare_data.py --per-class 500 100           # a seeded, stratified sample: 500 training, 100 test per class

Nothing here uses the study. A sample is drawn per class with a fixed seed, never a prefix of the
files (a dataset's order is not to be trusted: many are sorted by class).
"""
from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def sample(items: list, count: int | None, seed: int) -> list:
    if count is None or count >= len(items):
        return items
    return sorted(random.Random(seed).sample(items, count))


def from_torchvision(root: Path, out: Path, per_class: dict[str, int | None], seed: int) -> None:
    from torchvision.datasets import CIFAR10

    for split, train in (("train", True), ("test", False)):
        data = CIFAR10(str(root), train=train, download=True)
        for label, name in enumerate(data.classes):
            rows = sample([i for i, y in enumerate(data.targets) if y == label], per_class[split], seed)
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in rows:
                data[i][0].save(folder / f"{i:05d}.png")


def from_folder(source: Path, out: Path, per_class: dict[str, int | None], seed: int) -> None:
    for split in ("train", "test"):
        for folder in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            target = out / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for path in sample(sorted(folder.iterdir()), per_class[split], seed):
                if not (target / path.name).exists():
                    os.symlink(path.resolve(), target / path.name)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE / "data" / "cifar10"))
    p.add_argument("--root", default=str(HERE / "data" / "torchvision"), help="torchvision's download folder")
    p.add_argument("--from-folder", default=None, help="link the images of DIR/{train,test}/<class>/ instead")
    p.add_argument("--per-class", type=int, nargs=2, default=None, metavar=("TRAIN", "TEST"),
                   help="a seeded sample of this many images per class and split (default: all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    per_class = dict(zip(("train", "test"), args.per_class or (None, None)))
    out = Path(args.out)
    if args.from_folder:
        from_folder(Path(args.from_folder), out, per_class, args.seed)
    else:
        from_torchvision(Path(args.root), out, per_class, args.seed)
    for split in ("train", "test"):
        print(f"{split}: {sum(1 for _ in (out / split).glob('*/*'))} images in {out / split}")


if __name__ == "__main__":
    main()
