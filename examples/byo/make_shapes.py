"""Write a small image-folder dataset: coloured shapes at random places, one folder per class.

    python make_shapes.py                      # data/shapes/{train,test}/{circle,cross,square,triangle}/*.png
    python make_shapes.py --train 50 --test 20 --out /tmp/shapes

Why it exists: the walkthrough (docs/byo.md) needs data anyone can make offline. Any folder laid
out as ``<root>/{train,test}/<class>/<image>`` is a dataset to the study; this one is 3x32x32 PNGs
whose shapes sit anywhere in the frame, so a translation-robust teacher has something to teach.
Plain torch and torchvision, no leveled-kd code.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.io import encode_png

CLASSES = ("circle", "cross", "square", "triangle")
SIZE = 32


def shape_mask(kind: str, cy: float, cx: float, r: float) -> torch.Tensor:
    """A [SIZE, SIZE] bool mask of one shape of radius ``r`` centred at (cy, cx)."""
    y, x = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                          indexing="ij")
    dy, dx = y - cy, x - cx
    if kind == "circle":
        return dy ** 2 + dx ** 2 <= r ** 2
    if kind == "square":
        return (dy.abs() <= r * 0.8) & (dx.abs() <= r * 0.8)
    if kind == "cross":
        return ((dy.abs() <= r * 0.3) & (dx.abs() <= r)) | ((dx.abs() <= r * 0.3) & (dy.abs() <= r))
    if kind == "triangle":
        return (dy >= -r) & (dy <= r * 0.7) & (dx.abs() <= (dy + r) * 0.6)  # apex up
    raise ValueError(kind)


def image(kind: str, g: torch.Generator) -> torch.Tensor:
    """uint8 [3, SIZE, SIZE]: a dim noisy background and one coloured shape somewhere in the frame."""
    r = 5 + 4 * torch.rand(1, generator=g).item()
    cy, cx = (r + (SIZE - 2 * r) * torch.rand(2, generator=g)).tolist()
    colour = 120 + 135 * torch.rand(3, 1, 1, generator=g)
    picture = 30 * torch.rand(3, SIZE, SIZE, generator=g)
    picture = torch.where(shape_mask(kind, cy, cx, r), colour.expand(3, SIZE, SIZE), picture)
    return picture.clamp(0, 255).to(torch.uint8)


def write(out: Path, train: int, test: int, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    for split, count in (("train", train), ("test", test)):
        for kind in CLASSES:
            folder = out / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (folder / f"{i:05d}.png").write_bytes(encode_png(image(kind, g)).numpy().tobytes())
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(Path(__file__).with_name("data") / "shapes"))
    p.add_argument("--train", type=int, default=600, help="training images per class")
    p.add_argument("--test", type=int, default=200, help="test images per class")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = write(Path(args.out), args.train, args.test, args.seed)
    print(f"wrote {len(CLASSES)} classes x ({args.train} train + {args.test} test) images to {out}")


if __name__ == "__main__":
    main()
