"""Shared fixtures: a tiny synthetic VOC dataset packed into train/val record files.

The data goes through the real path: tools/make_synthetic_voc.py → tools/prepare_dataset.py
(VOC reader, checks, .lst writer) → tools/pack_rec.py, called in-process.
"""
from __future__ import annotations

import logging
import os
import types

import pytest

from config.runtime import setup_threads

setup_threads(1)  # before mxnet is imported by any test module

def drop_console_log_handler() -> None:
    """Remove config.runtime.setup_logging's console handler from the root logger.

    Left behind it would write later tests' log lines into their captured stderr, and tests
    that check a CLI's error is one clean line would see them.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_ssd_console", False)]:
        root.removeHandler(handler)


@pytest.fixture(autouse=True)
def _drop_console_log_handler_after_each_test():
    yield
    drop_console_log_handler()


NUM_TRAIN, NUM_VAL, IMAGE_SIZE = 48, 16, 128
CLASSES = ("circle", "square", "triangle", "cross")


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> types.SimpleNamespace:
    """Tiny synthetic VOC dataset: 48 train + 16 val images of 128 px, 4 classes, 1-5 objects.

    Attributes: root (folder holding VOCdevkit/VOC2007), class_names, num_classes,
    train_rec/train_idx/train_lst, val_rec/val_idx/val_lst, num_train, num_val, image_size.
    """
    from tools.make_synthetic_voc import SynthConfig, generate
    from tools.prepare_dataset import prepare_dataset

    root = str(tmp_path_factory.mktemp("synth_voc"))
    generate(SynthConfig(root=root, num_train=NUM_TRAIN, num_test=NUM_VAL,
                         min_image_size=IMAGE_SIZE, max_image_size=IMAGE_SIZE, classes=CLASSES,
                         min_objects=1, max_objects=5, difficult_fraction=0.08, seed=7,
                         progress=False))
    devkit = os.path.join(root, "VOCdevkit")
    quiet = logging.getLogger("dataset")
    level = quiet.level
    quiet.setLevel(logging.WARNING)          # packing logs a line per step: not wanted here
    train = prepare_dataset("pascal", "trainval", devkit, os.path.join(root, "train.lst"),
                            year="2007", shuffle=True, class_names=list(CLASSES), seed=0,
                            progress=False)
    val = prepare_dataset("pascal", "test", devkit, os.path.join(root, "val.lst"),
                          year="2007", shuffle=False, class_names=list(CLASSES), progress=False)
    quiet.setLevel(level)
    return types.SimpleNamespace(
        root=root, devkit=devkit, class_names=list(CLASSES), num_classes=len(CLASSES),
        train_rec=train["rec"], train_idx=train["idx"], train_lst=train["lst"],
        val_rec=val["rec"], val_idx=val["idx"], val_lst=val["lst"],
        num_train=train["num_listed"], num_val=val["num_listed"], image_size=IMAGE_SIZE,
        train_summary=train, val_summary=val)


def tiny_train_kwargs(synth: types.SimpleNamespace, prefix: str, **overrides) -> dict:
    """Keyword arguments of ``train_net.train_net`` for a short tiny-preset run on ``synth``.

    Defaults: 64 px, batch 8, one epoch from scratch on one CPU context, no validation;
    ``overrides`` replace any of them.
    """
    from config.mxnet_compat import mx

    kwargs = dict(net="tiny", train_path=synth.train_rec, num_classes=synth.num_classes,
                  batch_size=8, data_shape=64, mean_pixels=[123, 117, 104], resume=-1,
                  finetune=-1, pretrained="", epoch=0, prefix=prefix, ctx=[mx.cpu()],
                  begin_epoch=0, end_epoch=1, frequent=100, learning_rate=0.02, momentum=0.9,
                  weight_decay=5e-4, lr_refactor_step="10", lr_refactor_ratio=0.1,
                  num_example=synth.num_train, label_pad_width=-1,
                  class_names=synth.class_names, val_path="", seed=3)
    kwargs.update(overrides)
    return kwargs


ONNX_SIDE = 96


@pytest.fixture(scope="session")
def trained(synth_data, tmp_path_factory):
    """``tiny`` trained 10 epochs on the synthetic set (ONNX_SIDE px), deployed with --onnx
    (tests/test_onnx.py, tests/test_flip_test.py)."""
    import glob
    import deploy
    from train_net import train_net
    folder = tmp_path_factory.mktemp("onnx_model")
    prefix = str(folder / "ssd")
    train_net(**tiny_train_kwargs(synth_data, prefix, data_shape=ONNX_SIDE, end_epoch=10,
                                  learning_rate=0.05))
    status = deploy.main(["--network", "tiny", "--data-shape", str(ONNX_SIDE), "--num-class",
                          str(synth_data.num_classes), "--prefix", prefix + "_", "--epoch", "10",
                          "--nms", "0.45", "--no-force", "--onnx",
                          "--class-names", ",".join(synth_data.class_names)])
    assert status == 0
    deployed = str(folder / f"deploy_ssd_tiny_{ONNX_SIDE}")
    images = sorted(glob.glob(os.path.join(synth_data.devkit, "VOC2007", "JPEGImages", "*.jpg")))
    return {"folder": folder, "prefix": prefix, "deploy": deployed,
            "onnx": f"{deployed}-0010.onnx", "images": images}
