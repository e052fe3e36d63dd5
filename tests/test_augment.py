"""train.py --augment: the named training augmentations reach the record iterator."""
from __future__ import annotations

import pytest

import train
import train_net
from config.config import AUGMENTATIONS, cfg, train_augmentation


def test_ssd_is_the_original_and_copies():
    ssd = train_augmentation("ssd")
    assert ssd == dict(cfg.train)
    ssd["rand_crop_prob"] = 0.0
    assert cfg.train["rand_crop_prob"] == pytest.approx(5 / 6)


def test_light_keeps_half_the_side_and_zooms_out_at_most_twice():
    light = train_augmentation("light")
    assert light["num_crop_sampler"] == 3
    assert light["min_crop_scales"] == (0.5, 0.5, 0.5)
    assert light["min_crop_overlaps"] == (0.5, 0.7, 0.9)
    assert light["rand_crop_prob"] == 0.5
    assert light["rand_pad_prob"] == 0.3 and light["max_pad_scale"] == 2.0
    # colour jitter, interpolation and mirror as the original
    for key in ("random_hue_prob", "max_random_contrast", "inter_method", "rand_mirror_prob"):
        assert light[key] == cfg.train[key]


def test_none_is_mirror_only():
    plain = train_augmentation("none")
    assert plain["num_crop_sampler"] == 0 and plain["rand_pad_prob"] == 0.0
    assert plain["random_hue_prob"] == 0.0 and plain["rand_mirror_prob"] == 0.5
    assert plain["shuffle"] is True


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="--augment 'heavy'"):
        train_augmentation("heavy")


class _Recorded(Exception):
    pass


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_train_py_passes_the_augmentation_to_the_iterator(name, synth_data, tmp_path,
                                                          monkeypatch):
    seen = {}

    def recording_iter(path, *args, **kwargs):
        seen[path] = kwargs
        raise _Recorded

    monkeypatch.setattr(train_net, "DetRecordIter", recording_iter)
    argv = ["--train-path", synth_data.train_rec, "--val-path", "", "--network", "tiny",
            "--data-shape", "64", "--num-class", str(synth_data.num_classes),
            "--class-names", ",".join(synth_data.class_names), "--batch-size", "4",
            "--gpus", "", "--pretrained", "", "--prefix", str(tmp_path / "ssd"), "--log", "",
            "--augment", name]
    with pytest.raises(_Recorded):
        train.main(argv)
    kwargs = seen[synth_data.train_rec]
    expected = train_augmentation(name)
    for key, value in expected.items():
        if key != "seed":
            assert kwargs[key] == value, key
