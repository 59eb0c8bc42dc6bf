"""Train the example's teacher your own way and keep a series of checkpoints (state dicts).

    python train_teacher.py                    # checkpoints/shapes_cnn-step-000100.pt, ...-000300.pt

Nothing here uses the study: plain torch and torchvision, a loop you would write anyway. What the
study needs from it is in three conventions the space file repeats: the classes are the training
folder's names, sorted (``circle, cross, square, triangle``); images are normalized as
``(pixels / 255 - 0.5) / 0.5`` per channel (the space's ``dataset: {mean, std}``); and each
checkpoint is the model's ``state_dict()``, named by its training step (the space's ``snapshots:``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image, read_file

from shapes_models import ShapesCNN

HERE = Path(__file__).resolve().parent
MEAN, STD = 0.5, 0.5


def read_split(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    images, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((folder / cls).glob("*.png")):
            images.append(decode_image(read_file(str(path)), mode=ImageReadMode.RGB))
            labels.append(label)
    x = (torch.stack(images).float() / 255 - MEAN) / STD
    return x, torch.tensor(labels)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(HERE / "data" / "shapes"))
    p.add_argument("--out", default=str(HERE / "checkpoints"))
    p.add_argument("--save-at", type=int, nargs="+", default=[100, 300], help="steps to keep a checkpoint at")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    train_x, train_y = read_split(Path(args.data) / "train")
    test_x, test_y = read_split(Path(args.data) / "test")
    model = ShapesCNN(tuple(train_x.shape[1:]), int(train_y.max()) + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for step in range(1, max(args.save_at) + 1):
        batch = torch.randint(0, len(train_x), (args.batch_size,))
        loss = F.cross_entropy(model(train_x[batch]).logits, train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in args.save_at:
            model.eval()
            with torch.no_grad():
                accuracy = (model(test_x).logits.argmax(1) == test_y).float().mean().item()
            model.train()
            path = out / f"shapes_cnn-step-{step:06d}.pt"
            torch.save(model.state_dict(), path)
            print(f"step {step}: loss {loss.item():.3f}, test accuracy {accuracy:.3f} -> {path}")


if __name__ == "__main__":
    main()
