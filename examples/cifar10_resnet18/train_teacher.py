"""Train a torchvision ResNet-18 on CIFAR-10 your own way and keep its checkpoint (a state dict).

    python train_teacher.py                         # checkpoints/resnet18-cifar10.pt (and -step-NNNNNN.pt along the way)
    python train_teacher.py --steps 3000 --save-at 500 3000

Nothing here uses the study: plain torch and torchvision, the loop you would write anyway (SGD with
momentum and a one-cycle schedule, random crops and flips). What the study needs from it is in three
conventions that the space file repeats:

- the classes are the training folder's names, sorted (``airplane, automobile, ..., truck``);
- images are normalized with CIFAR-10's usual per-channel statistics (the space's ``dataset: {mean, std}``);
- a checkpoint is the plain model's ``state_dict()`` (``torchvision.models.resnet18(num_classes=10)``),
  which the study loads into its ``torchvision:resnet18`` strictly (a mismatch is one line).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.models import resnet18

HERE = Path(__file__).resolve().parent
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def read_split(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    images, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((folder / cls).iterdir()):
            images.append(decode_image(read_file(str(path)), mode=ImageReadMode.RGB))
            labels.append(label)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (torch.stack(images).float() / 255 - mean) / std, torch.tensor(labels)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 4-px-padded 32x32 crops and horizontal flips, the usual CIFAR recipe (the teacher's own
    business: the students never see shifted images)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dx, dy = torch.randint(0, 9, (2, n), generator=generator)
    rows = (dy.view(n, 1, 1, 1) + torch.arange(h).view(1, 1, h, 1)).expand(n, c, h, w)
    cols = (dx.view(n, 1, 1, 1) + torch.arange(w).view(1, 1, 1, w)).expand(n, c, h, w)
    out = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum()) for i in range(0, len(x), 500))
    model.train()
    return correct / len(x)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(HERE / "data" / "cifar10"))
    p.add_argument("--out", default=str(HERE / "checkpoints"))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--save-at", type=int, nargs="*", default=[], help="also keep resnet18-cifar10-step-N.pt at these steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    train_x, train_y = read_split(Path(args.data) / "train")
    test_x, test_y = read_split(Path(args.data) / "test")
    model = resnet18(num_classes=int(train_y.max()) + 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for step in range(1, args.steps + 1):
        batch = torch.randint(0, len(train_x), (args.batch_size,), generator=generator)
        loss = F.cross_entropy(model(augment(train_x[batch], generator)), train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step in args.save_at or step == args.steps:
            name = "resnet18-cifar10.pt" if step == args.steps else f"resnet18-cifar10-step-{step:06d}.pt"
            torch.save(model.state_dict(), out / name)
            print(f"step {step}: loss {loss.item():.3f}, test accuracy {accuracy(model, test_x, test_y):.3f} "
                  f"({time.time() - started:.0f} s) -> {out / name}", flush=True)


if __name__ == "__main__":
    main()
