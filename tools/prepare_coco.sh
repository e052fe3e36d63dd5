#!/usr/bin/env bash
# Pack COCO 2014 for training, as the original example's script of the same name did:
# train2014 + valminusminival2014 -> data/train.*, minival2014 -> data/val.*, from data/coco.
# Extra flags go to both runs (e.g. --root /path/to/coco).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python}"
"$python" "$here/prepare_dataset.py" --dataset coco --set train2014,valminusminival2014 \
    --root "$here/../data/coco" --target "$here/../data/train.lst" "$@"
"$python" "$here/prepare_dataset.py" --dataset coco --set minival2014 \
    --root "$here/../data/coco" --target "$here/../data/val.lst" --no-shuffle "$@"
