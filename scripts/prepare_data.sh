#!/usr/bin/env bash
# Lay out offline copies of the datasets under DEST in torchvision's layouts, for
# machines without internet (with internet, torchvision downloads them itself):
#   DEST/MNIST/raw/...            from ../shared/data (when beside the checkout)
#   DEST/cifar10-jpeg/{train,test} from ../shared/data (a 20k-image JPEG subset)
#   DEST/FashionMNIST/raw/...     from Debian's dataset-fashion-mnist package, when installed
# Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/data}"
shared="${LEVELED_KD_SHARED_DATA:-$root/../shared/data}"
mkdir -p "$dest"
if [ -x "$shared/unpack.sh" ]; then
  "$shared/unpack.sh" "$dest" >/dev/null
fi
fashion=/usr/share/datasets/fashion-mnist
if [ -d "$fashion" ]; then
  mkdir -p "$dest/FashionMNIST/raw"
  for f in "$fashion"/*.gz; do
    out="$dest/FashionMNIST/raw/$(basename "${f%.gz}")"
    [ -s "$out" ] || gzip -dc "$f" > "$out"
  done
fi
echo "$dest"
