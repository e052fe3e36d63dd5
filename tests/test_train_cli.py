"""train.py CLI: flags, input errors, and one end-to-end run plus tools/plot_log.py."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from config.mxnet_compat import mx
import pytest

import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_CUDA = mx.runtime.Features().is_enabled("CUDA")


def _read(path):
    with open(path) as f:
        return f.read()


def test_defaults_follow_v1x():
    args = train.get_parser().parse_args([])
    assert args.learning_rate == 0.002 and isinstance(args.lr_refactor_ratio, float)
    assert args.lr_refactor_step == "80, 160" and args.end_epoch == 240
    assert args.kv_store == "device" and args.optimizer == "sgd"
    assert args.use_voc07_metric is True and args.force_nms is False
    assert args.use_difficult is False and args.resume == -1 and args.finetune == -1
    assert args.freeze_pattern == "^(conv1_|conv2_).*" and args.nms_topk == 400
    assert args.label_width is None and args.num_example is None
    assert args.gpus == ("0" if train.cuda_available() else "")
    flipped = train.get_parser().parse_args(["--no-voc07", "--force", "--use-difficult",
                                             "--resume", "interrupted"])
    assert flipped.use_voc07_metric is False and flipped.force_nms and flipped.use_difficult
    assert flipped.resume == "interrupted"


def test_parser_is_reusable_as_parent():
    parent = train.get_parser(add_help=False)
    child = argparse.ArgumentParser(parents=[parent])
    child.add_argument("--extra", type=int, default=1)
    assert child.parse_args(["--lr", "0.1", "--extra", "2"]).learning_rate == 0.1


def test_help_lists_every_flag():
    text = train.get_parser().format_help()
    for flag in ("--train-path", "--val-path", "--label-width", "--lr-steps", "--lr-factor",
                 "--warmup-epochs", "--seed", "--tensorboard", "--test-io", "--nan-policy",
                 "--save-period", "--optimizer", "--kv-store", "--cpus", "--min-neg-samples",
                 "--neg-ratio"):
        assert flag in text, flag


def test_parse_class_names(tmp_path):
    from dataset.imdb import load_class_names
    assert load_class_names("a, b,c", num_classes=3) == ["a", "b", "c"]
    names = tmp_path / "names.txt"
    names.write_text("x\ny\n\n")
    assert load_class_names(str(names), num_classes=2) == ["x", "y"]
    with pytest.raises(ValueError, match="'a,b' has 2 names but --num-class is 3"):
        load_class_names("a,b", num_classes=3)
    with pytest.raises(ValueError, match="'' has 0 names but --num-class is 3"):
        load_class_names("", num_classes=3)
    # the original README's COCO line names a file that never shipped: say which ones do
    with pytest.raises(FileNotFoundError, match=r"\./dataset/names/coco_label: file not found "
                                                r"\(names files shipped here: .*mscoco\.names"):
        load_class_names("./dataset/names/coco_label", num_classes=80)


def test_parse_contexts():
    assert train.parse_contexts("", 2) == [mx.cpu(0), mx.cpu(1)]
    with pytest.raises(ValueError, match="--gpus 'a,b'"):
        train.parse_contexts("a,b")


@pytest.mark.skipif(HAS_CUDA, reason="CUDA build: --gpus 0 is valid")
def test_gpus_on_cpu_build_says_how_to_install(capsys, synth_data):
    code = train.main(["--train-path", synth_data.train_rec, "--val-path", "", "--gpus", "0",
                       "--num-class", "4",
                       "--class-names", "a,b,c,d", "--log", ""])
    assert code == 2
    assert "pip install mxnet-cu112==1.9.1" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--class-names", "a,b"], "--num-class is 4"),
    (["--lr-steps", "9,3"], "--lr-steps"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--label-width", "10"], "at least 32"),
    (["--kv-store", "nccl", "--cpus", "2"], "--kv-store nccl"),
])
def test_bad_input_exits_2_with_one_line(capsys, synth_data, tmp_path, extra, message):
    argv = ["--train-path", synth_data.train_rec, "--val-path", "", "--network", "tiny",
            "--data-shape", "64", "--num-class", "4", "--class-names", "a,b,c,d",
            "--pretrained", "", "--prefix", str(tmp_path / "m"), "--log", "",
            "--batch-size", "8"] + extra
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in err


def test_missing_train_record(capsys, tmp_path):
    assert train.main(["--train-path", str(tmp_path / "nope.rec"), "--log", ""]) == 2
    assert "--train-path" in capsys.readouterr().err


def test_test_io_reports_speed(synth_data, caplog, tmp_path):
    import logging
    with caplog.at_level(logging.INFO):
        code = train.main(["--train-path", synth_data.train_rec, "--val-path", "",
                           "--network", "tiny", "--data-shape", "64", "--num-class", "4",
                           "--class-names", "a,b,c,d", "--batch-size", "8", "--test-io",
                           "--log", "", "--prefix", str(tmp_path / "io")])
    assert code == 0 and "images/s" in caplog.text
    assert not os.path.exists(str(tmp_path / "io_tiny_64-0001.params"))


@pytest.mark.slow
def test_cli_end_to_end_and_plot(synth_data, tmp_path):
    prefix = str(tmp_path / "e2e")
    log = str(tmp_path / "train.log")
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    argv = [sys.executable, "train.py", "--train-path", synth_data.train_rec,
            "--val-path", synth_data.val_rec, "--network", "tiny", "--data-shape", "64",
            "--num-class", str(synth_data.num_classes),
            "--class-names", ",".join(synth_data.class_names), "--pretrained", "",
            "--batch-size", "8", "--end-epoch", "2", "--lr", "0.01", "--prefix", prefix,
            "--log", log, "--frequent", "3", "--seed", "1"]
    out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("-symbol.json", "-0001.params", "-0002.params", "-0002.states", "-0002.json",
                 "-best.params", "-best.json"):
        assert os.path.isfile(prefix + "_tiny_64" + name), name
    text = _read(log)
    assert "Epoch[1] Validation-mAP=" in text and "Node[0]" in text
    assert "Epoch[1] Learning-rate=0.01" in text and "Label width 32" in text
    assert "protocol: VOC07 11-point AP" in text
    # --resume with an epoch that does not exist lists the saved ones
    bad = subprocess.run(argv + ["--resume", "7", "--end-epoch", "9"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "epochs saved under" in bad.stderr and "1, 2" in bad.stderr
    png = str(tmp_path / "plot.png")
    plot = subprocess.run([sys.executable, "tools/plot_log.py", log, "--output", png],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    from tools.plot_log import parse_log
    series = parse_log(log)
    assert sorted(series["Validation-mAP"]) == [1, 2]
    assert series["Learning-rate"] == {1: 0.01, 2: 0.01}


def test_plot_log_rejects_other_files(tmp_path, capsys):
    from tools import plot_log
    other = tmp_path / "x.log"
    other.write_text("hello\n")
    assert plot_log.main([str(other)]) == 2
    assert "not a train.py log" in capsys.readouterr().err
