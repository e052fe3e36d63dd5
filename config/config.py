"""Augmentation settings of the record iterator: ``cfg.train`` and ``cfg.valid``.

Values are those of the original MXNet SSD example (REFERENCE.md §3.1), except
``preprocess_threads``, which follows the cores of this machine
(:func:`config.runtime.decode_threads`) instead of the original 48 / 32.
Use ``DetRecordIter(..., **cfg.train)``: both entries are already flat keyword arguments.
:func:`train_augmentation` selects the training augmentation by name (``train.py --augment``):
``ssd`` is ``cfg.train``; ``light`` and ``none`` suit short schedules from scratch
(docs/RECIPE.md).
"""
from __future__ import annotations

from config.runtime import decode_threads
from config.utils import ColorJitter, DotDict, RandCropper, RandPadder, config_as_dict

# Five SSD crop samplers: scale 0.3-1, aspect 0.5-2, minimum IoU with a ground truth
# 0.1 / 0.3 / 0.5 / 0.7 / 0.9, 25 trials each.
_TRAIN_SAMPLERS = [
    RandCropper(min_crop_scales=0.3, max_crop_scales=1.0,
                min_crop_aspect_ratios=0.5, max_crop_aspect_ratios=2.0,
                min_crop_overlaps=overlap, max_crop_overlaps=1.0,
                min_crop_sample_coverages=0.0, max_crop_sample_coverages=1.0,
                min_crop_object_coverages=0.0, max_crop_object_coverages=1.0,
                max_crop_trials=25)
    for overlap in (0.1, 0.3, 0.5, 0.7, 0.9)
]


def _build_train() -> dict:
    num = len(_TRAIN_SAMPLERS)
    raw = {
        "rand_crop_samplers": _TRAIN_SAMPLERS,
        "rand_crop_prob": num / (num + 1.0),   # 5/6: "no crop" is the sixth choice
        "crop_emit_mode": "center",            # keep an object iff its centre is in the crop
        "rand_pad": RandPadder(rand_pad_prob=0.5, max_pad_scale=4.0, fill_value=127),
        "color_jitter": ColorJitter(
            random_hue_prob=0.5, max_random_hue=18,
            random_saturation_prob=0.5, max_random_saturation=32,
            random_illumination_prob=0.5, max_random_illumination=32,
            random_contrast_prob=0.5, max_random_contrast=0.5),
        "inter_method": 10,                    # random interpolation per image
        "rand_mirror_prob": 0.5,
        "shuffle": True,
        "seed": 233,
        "preprocess_threads": decode_threads(),
    }
    return config_as_dict(raw)


def _build_light() -> dict:
    """Milder than the original: crops keep >= 50 % of the side, zoom-out <= 2x."""
    samplers = [RandCropper(min_crop_scales=0.5, max_crop_scales=1.0,
                            min_crop_aspect_ratios=0.75, max_crop_aspect_ratios=1.33,
                            min_crop_overlaps=overlap, max_crop_overlaps=1.0,
                            min_crop_sample_coverages=0.0, max_crop_sample_coverages=1.0,
                            min_crop_object_coverages=0.0, max_crop_object_coverages=1.0,
                            max_crop_trials=25)
                for overlap in (0.5, 0.7, 0.9)]
    light = dict(cfg.train)
    light.update(config_as_dict({
        "rand_crop_samplers": samplers,
        "rand_crop_prob": 0.5,
        "rand_pad": RandPadder(rand_pad_prob=0.3, max_pad_scale=2.0, fill_value=127),
    }))
    return light


def _build_photo() -> dict:
    """For real photographs and long schedules: the original's five crop samplers, zoom-out <= 2x."""
    photo = dict(cfg.train)
    photo.update(config_as_dict({
        "rand_pad": RandPadder(rand_pad_prob=0.5, max_pad_scale=2.0, fill_value=127),
    }))
    return photo


def _build_none() -> dict:
    """Mirror only (and the shuffle of training)."""
    plain = dict(cfg.valid)
    plain.update(rand_mirror_prob=0.5, shuffle=True, seed=cfg.train["seed"])
    return plain


def _build_valid() -> dict:
    raw = {
        "rand_crop_samplers": [],
        "rand_crop_prob": 0.0,
        "rand_pad": RandPadder(rand_pad_prob=0.0, max_pad_scale=1.0, fill_value=127),
        "color_jitter": ColorJitter(),
        "rand_mirror_prob": 0.0,
        "shuffle": False,
        "seed": 0,
        "preprocess_threads": decode_threads(),
    }
    return config_as_dict(raw)


cfg = DotDict(train=_build_train(), valid=_build_valid())

AUGMENTATIONS = ("ssd", "light", "photo", "none")


def train_augmentation(name: str = "ssd") -> dict:
    """Iterator keyword arguments of the training augmentation ``name``.

    Parameters
    ----------
    name : {'ssd', 'light', 'none'}
        ``ssd``: the original's (5 crop samplers, scale 0.3-1, zoom-out up to 4x with p 0.5,
        colour jitter, mirror). ``light``: 3 samplers keeping >= 50 % of the side with p 0.5,
        zoom-out up to 2x with p 0.3, same colour jitter and mirror. ``none``: mirror only.

    Returns
    -------
    dict
        A fresh copy, ready for ``DetRecordIter(..., **kwargs)``.
    """
    builders = {"ssd": lambda: dict(cfg.train), "light": _build_light, "photo": _build_photo,
                "none": _build_none}
    if name not in builders:
        raise ValueError(f"--augment {name!r}: choose one of {', '.join(AUGMENTATIONS)}")
    return builders[name]()
