#!/usr/bin/env bash
# Pack PASCAL VOC for training, as the original example's script of the same name did:
# VOC 2007+2012 trainval -> data/train.{lst,rec,idx}, VOC 2007 test -> data/val.{lst,rec,idx},
# from the devkit at data/VOCdevkit. Extra flags go to both runs (e.g. --root /path/VOCdevkit).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python}"
"$python" "$here/prepare_dataset.py" --dataset pascal --year 2007,2012 --set trainval \
    --target "$here/../data/train.lst" "$@"
"$python" "$here/prepare_dataset.py" --dataset pascal --year 2007 --set test \
    --target "$here/../data/val.lst" --no-shuffle "$@"
