"""Small helpers for the augmentation config: ``DotDict``, sampler namedtuples, flattening.

``config_as_dict`` turns a config holding a list of crop-sampler namedtuples into the flat,
per-field tuples that ``mx.io.ImageDetRecordIter`` takes (``min_crop_scales=(0.3, 0.3, ...)``).
"""
from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping
from typing import Any


class DotDict(Mapping):
    """Read-only mapping whose keys are also attributes (``cfg.train.rand_crop_prob``)."""

    def __init__(self, data: Mapping | None = None, **kwargs: Any) -> None:
        merged = dict(data or {}, **kwargs)
        object.__setattr__(
            self, "_data",
            {k: DotDict(v) if isinstance(v, dict) else v for k, v in merged.items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"no config key {name!r}; keys: {sorted(self._data)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._data[name] = value

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"DotDict({self._data!r})"

    def copy(self) -> "DotDict":
        """Shallow copy."""
        return DotDict(dict(self._data))


def namedtuple_with_defaults(typename: str, field_names: str | list[str],
                             default_values: Mapping | tuple = ()) -> type:
    """``collections.namedtuple`` whose fields have defaults (a mapping or a tuple in order)."""
    cls = collections.namedtuple(typename, field_names)
    cls.__new__.__defaults__ = (None,) * len(cls._fields)
    if isinstance(default_values, Mapping):
        prototype = cls(**default_values)
    else:
        prototype = cls(*default_values)
    cls.__new__.__defaults__ = tuple(prototype)
    return cls


# One random-crop sampler of ImageDetRecordIter; each field becomes the i-th entry of the
# iterator's per-sampler tuple of the same name (plural).
RandCropper = namedtuple_with_defaults(
    "RandCropper",
    "min_crop_scales, max_crop_scales, min_crop_aspect_ratios, max_crop_aspect_ratios, "
    "min_crop_overlaps, max_crop_overlaps, min_crop_sample_coverages, "
    "max_crop_sample_coverages, min_crop_object_coverages, max_crop_object_coverages, "
    "max_crop_trials",
    {"min_crop_scales": 0.0, "max_crop_scales": 1.0,
     "min_crop_aspect_ratios": 1.0, "max_crop_aspect_ratios": 1.0,
     "min_crop_overlaps": 0.0, "max_crop_overlaps": 1.0,
     "min_crop_sample_coverages": 0.0, "max_crop_sample_coverages": 1.0,
     "min_crop_object_coverages": 0.0, "max_crop_object_coverages": 1.0,
     "max_crop_trials": 25})

# Random expansion (zoom out) settings.
RandPadder = namedtuple_with_defaults(
    "RandPadder", "rand_pad_prob, max_pad_scale, fill_value",
    {"rand_pad_prob": 0.0, "max_pad_scale": 1.0, "fill_value": 127})

# Photometric jitter settings.
ColorJitter = namedtuple_with_defaults(
    "ColorJitter",
    "random_hue_prob, max_random_hue, random_saturation_prob, max_random_saturation, "
    "random_illumination_prob, max_random_illumination, random_contrast_prob, "
    "max_random_contrast",
    {"random_hue_prob": 0.0, "max_random_hue": 0, "random_saturation_prob": 0.0,
     "max_random_saturation": 0, "random_illumination_prob": 0.0,
     "max_random_illumination": 0, "random_contrast_prob": 0.0, "max_random_contrast": 0.0})


def zip_namedtuple(nt_list: list) -> dict[str, tuple]:
    """Transpose a list of namedtuples into ``{field: (value_0, value_1, ...)}``."""
    if not nt_list:
        return {}
    fields = nt_list[0]._fields
    return {name: tuple(getattr(nt, name) for nt in nt_list) for name in fields}


def config_as_dict(cfg: Mapping) -> dict[str, Any]:
    """Flatten an augmentation config into ``ImageDetRecordIter`` keyword arguments.

    Parameters
    ----------
    cfg : Mapping
        May hold ``rand_crop_samplers`` (list of :class:`RandCropper`), ``rand_pad``
        (:class:`RandPadder`), ``color_jitter`` (:class:`ColorJitter`) and plain keys.

    Returns
    -------
    dict
        Plain keyword arguments; ``num_crop_sampler`` is set from the sampler count.
    """
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if key == "rand_crop_samplers":
            out.update(zip_namedtuple(list(value)))
            out["num_crop_sampler"] = len(value)
        elif isinstance(value, (RandPadder, ColorJitter)):
            out.update(value._asdict())
        else:
            out[key] = value
    return out
