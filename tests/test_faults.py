"""Runtime faults (issue 17, cases 1-4): bad records, kill -9, full disks, two runs on a prefix.

Each fault must end in a clear one-line error naming the file (and record), or in a logged and
counted recovery: never a C++ abort, a hang, a silent wrong result or a lost checkpoint.
docs/notes/RELIABILITY.md (section 5) lists every fault with the test here that shows it.
"""
from __future__ import annotations

import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataset.record_check import (BadRecordError, check_records, scan_records,
                                  select_records)
from dataset.recordio_utils import LabelLayoutError, read_idx, scan_labels

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --------------------------------------------------------------------------------------------
# corrupting record files
# --------------------------------------------------------------------------------------------
def copy_rec(src_rec: str, folder: str, name: str = "data") -> str:
    """Copy ``src_rec`` and its ``.idx`` to ``folder/name.rec``; return the new ``.rec``."""
    dst = os.path.join(str(folder), f"{name}.rec")
    shutil.copy(src_rec, dst)
    shutil.copy(os.path.splitext(src_rec)[0] + ".idx", os.path.splitext(dst)[0] + ".idx")
    return dst


def record_layout(rec_path: str, position: int) -> tuple[int, int, int]:
    """(record offset, payload length, offset of the image bytes) of record ``position``."""
    _, offset = read_idx(os.path.splitext(rec_path)[0] + ".idx")[position]
    with open(rec_path, "rb") as f:
        f.seek(offset)
        _, lrec = struct.unpack("<II", f.read(8))
        flag = struct.unpack("<I", f.read(4))[0]
    return offset, lrec & ((1 << 29) - 1), offset + 8 + 24 + 4 * flag


def flip_image_bytes(rec_path: str, position: int, fraction: float, count: int = 16) -> None:
    """XOR ``count`` bytes of record ``position``'s JPEG at ``fraction`` of its length."""
    offset, length, image = record_layout(rec_path, position)
    start = image + int((offset + 8 + length - image - count) * fraction)
    with open(rec_path, "r+b") as f:
        f.seek(start)
        data = f.read(count)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in data))


def garble_label_header(rec_path: str, position: int) -> None:
    """Overwrite the ``[2, W]`` label header of record ``position`` with garbage."""
    offset, _, _ = record_layout(rec_path, position)
    with open(rec_path, "r+b") as f:
        f.seek(offset + 8 + 24)
        f.write(struct.pack("<ff", 123456.0, -7.0))


# --------------------------------------------------------------------------------------------
# case 1: records
# --------------------------------------------------------------------------------------------
def test_clean_records_pass(synth_data):
    report = scan_records(synth_data.train_rec)
    assert report.num_records == synth_data.num_train
    assert report.bad == []


@pytest.mark.parametrize("fraction", [0.0, 0.02, 0.5, 0.95])
def test_flipped_image_bytes_named(synth_data, tmp_path, fraction):
    # 0 / 0.02: JPEG headers (imdecode fails: the C++ iterator dies in an OpenCV assertion);
    # 0.5 / 0.95: entropy-coded data (decodes to a garbled picture with a libjpeg warning)
    rec = copy_rec(synth_data.train_rec, tmp_path)
    flip_image_bytes(rec, 5, fraction)
    report = scan_records(rec)
    assert [b.position for b in report.bad] == [5]
    assert "image" in report.bad[0].reason
    with pytest.raises(BadRecordError, match=r"--train-path .*data\.rec record 5 \(key \d+, "
                                             r"offset \d+\): image .*1 of 48 records"):
        select_records(rec, "stop", "--train-path")


def test_truncated_rec(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    os.truncate(rec, os.path.getsize(rec) - 100)     # cuts into the last record
    report = scan_records(rec)
    assert [b.position for b in report.bad] == [synth_data.num_train - 1]
    assert "truncated .rec" in report.bad[0].reason


def test_idx_past_the_end(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    with open(os.path.splitext(rec)[0] + ".idx", "a") as f:
        f.write(f"999\t{os.path.getsize(rec) + 4096}\n")
    report = scan_records(rec)
    assert [(b.position, b.key) for b in report.bad] == [(synth_data.num_train, 999)]
    assert "points past the end" in report.bad[0].reason


def test_idx_of_another_rec(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    shutil.copy(synth_data.val_idx, os.path.splitext(rec)[0] + ".idx")
    for policy in ("stop", "skip"):
        with pytest.raises(BadRecordError, match=r"does not match .*data\.rec"):
            select_records(rec, policy, "--train-path")


def test_idx_missing_records(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    idx = os.path.splitext(rec)[0] + ".idx"
    with open(idx) as f:
        lines = f.readlines()
    with open(idx, "w") as f:
        f.writelines(lines[:10] + lines[11:])
    with pytest.raises(BadRecordError, match=r"1 record\(s\) of the \.rec are not in the \.idx"):
        scan_records(rec)


def test_garbage_label_header(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    garble_label_header(rec, 7)
    report = scan_records(rec)
    assert [b.position for b in report.bad] == [7]
    assert "label header [123456.0, -7.0] is not [2, 5] or [2, 6]" in report.bad[0].reason


@pytest.mark.parametrize("garble", ["header", "flag", "length"])
def test_both_record_readers_share_one_label_check(synth_data, tmp_path, garble):
    """scan_labels (headers only) and scan_records (whole payload) say the same of a record."""
    rec = copy_rec(synth_data.train_rec, tmp_path)
    offset = dict(read_idx(rec[:-4] + ".idx"))[3] + 8      # payload of the record at key 3
    with open(rec, "r+b") as f:
        f.seek(offset)
        flag = struct.unpack("<I", f.read(4))[0]
        if garble == "header":
            f.seek(offset + 24)
            f.write(struct.pack("<ff", 3.0, 6.0))
        elif garble == "flag":
            f.seek(offset)
            f.write(struct.pack("<I", 0))
        else:                                            # one value short of whole objects
            f.seek(offset)
            f.write(struct.pack("<I", flag - 1))
    expected = {"header": "label header [3.0, 6.0] is not [2, 5] or [2, 6]",
                "flag": "header flag 0 does not give a packed label",
                "length": f"label length {flag - 1} is not 2 + 6 x objects"}[garble]
    with pytest.raises(LabelLayoutError, match=re.escape(expected)):
        scan_labels(rec)
    report = scan_records(rec, decode=False)
    assert len(report.bad) == 1 and expected in report.bad[0].reason


def test_check_is_cached_by_size_and_mtime(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    first = check_records(rec)
    assert not first.cached and first.bad == []
    assert check_records(rec).cached
    flip_image_bytes(rec, 3, 0.0)                     # same size, new mtime
    os.utime(rec, ns=(os.stat(rec).st_atime_ns, os.stat(rec).st_mtime_ns + 10**9))
    again = check_records(rec)
    assert not again.cached and [b.position for b in again.bad] == [3]


def test_skip_copy_reads_through_mxnet(synth_data, tmp_path):
    from dataset.iterator import DetRecordIter

    rec = copy_rec(synth_data.train_rec, tmp_path)
    flip_image_bytes(rec, 2, 0.0)
    garble_label_header(rec, 9)
    selection = select_records(rec, "skip", "--train-path")
    assert [b.position for b in selection.skipped] == [2, 9]
    assert selection.path != rec and scan_records(selection.path).bad == []
    it = DetRecordIter(selection.path, 8, 64, shuffle=False)
    assert it.num_images == synth_data.num_train - 2
    images = sum(batch.data[0].shape[0] - batch.pad for batch in it)
    assert images == synth_data.num_train - 2
    # the copy is reused while the original is unchanged
    assert select_records(rec, "skip", "--train-path").path == selection.path


def test_skip_refuses_a_mostly_bad_file(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    os.truncate(rec, os.path.getsize(rec) // 3)
    with pytest.raises(BadRecordError, match="too many to skip"):
        select_records(rec, "skip", "--rec-path")


def test_prepare_dataset_check_rec_lists_bad_records(synth_data, tmp_path, capsys):
    from tools import prepare_dataset

    rec = copy_rec(synth_data.train_rec, tmp_path)
    assert prepare_dataset.main(["--check-rec", rec]) == 0
    flip_image_bytes(rec, 4, 0.0)
    garble_label_header(rec, 11)
    assert prepare_dataset.main(["--check-rec", rec]) == 1
    out = capsys.readouterr().out
    assert f"bad: {rec} record 4 (key" in out and f"bad: {rec} record 11 (key" in out
    assert f"{rec}: 48 records, 2 bad" in out


def _train_argv(synth, rec: str, prefix: str, *extra: str) -> list[str]:
    return ["--train-path", rec, "--val-path", "", "--network", "tiny", "--data-shape", "64",
            "--num-class", str(synth.num_classes), "--class-names", ",".join(synth.class_names),
            "--pretrained", "", "--batch-size", "8", "--prefix", prefix, "--log", "",
            "--frequent", "100", "--seed", "3", "--end-epoch", "1", *extra]


@pytest.fixture
def root_logging():
    """Restore the root logger's handlers: train.main binds its console to this test's stderr."""
    import logging

    root = logging.getLogger()
    saved = root.handlers[:]
    yield
    for handler in root.handlers[:]:
        if handler not in saved:
            root.removeHandler(handler)
            handler.close()


def test_train_bad_records_stop_and_skip(synth_data, tmp_path, capsys, root_logging):
    from training import checkpoint
    import train

    rec = copy_rec(synth_data.train_rec, tmp_path)
    flip_image_bytes(rec, 6, 0.5)
    prefix = str(tmp_path / "ssd")
    assert train.main(_train_argv(synth_data, rec, prefix)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: --train-path {rec} record 6 (key ")
    assert "--bad-records skip" in err[-1]
    assert "Traceback" not in "\n".join(err)

    assert train.main(_train_argv(synth_data, rec, prefix, "--bad-records", "skip")) == 0
    card = checkpoint.load_card(prefix + "_tiny_64", 1)
    assert card["bad_records"]["train"]["skipped_per_epoch"] == 1
    assert card["bad_records"]["train"]["records"][0]["position"] == 6


def test_evaluate_bad_records_stop_and_skip(synth_data, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cli_evaluate_faults", "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    from tests.test_evaluate import save_random_checkpoint

    save_random_checkpoint(str(tmp_path / "ssd_tiny_128"), synth_data.num_classes)
    rec = copy_rec(synth_data.val_rec, tmp_path, "val")
    garble_label_header(rec, 3)
    argv = ["--rec-path", rec, "--network", "tiny", "--data-shape", "128", "--num-class",
            str(synth_data.num_classes), "--class-names", ",".join(synth_data.class_names),
            "--prefix", str(tmp_path / "ssd_"), "--epoch", "1", "--cpu", "--batch-size", "4"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: --rec-path {rec} record 3 (key ")
    assert cli.main(argv + ["--bad-records", "skip"]) == 0
    out = capsys.readouterr().out
    assert f"{synth_data.num_val - 1} images" in out


# --------------------------------------------------------------------------------------------
# train.py in a real process (cases 2-4)
# --------------------------------------------------------------------------------------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = "ssd_tiny_64"


def _env(**extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("SSD_FAULT_KILL_AT", None)
    env.update(extra)
    return env


def _train_process(synth, prefix: str, end_epoch: int, resume: str | None = None,
                   kill_at: str | None = None, rlimit_fsize: int | None = None,
                   popen: bool = False):
    argv = [sys.executable, "train.py", *_train_argv(synth, synth.train_rec, prefix,
                                                     "--end-epoch", str(end_epoch))]
    if resume is not None:
        argv += ["--resume", resume]
    env = _env(**({"SSD_FAULT_KILL_AT": kill_at} if kill_at else {}))

    def limit() -> None:
        if rlimit_fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (rlimit_fsize, rlimit_fsize))

    if popen:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180, preexec_fn=limit)


def _temporaries(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if ".tmp" in name)


def _assert_newest_loads(prefix: str) -> int | None:
    """The newest complete checkpoint loads: params (all arrays), states and card agree."""
    from training import checkpoint

    last = checkpoint.last_complete_epoch(prefix)
    if last is None:
        return None
    params = checkpoint.load_param_file(checkpoint.checkpoint_path(prefix, last, "params"),
                                        "test")
    assert params and all(k.startswith(("arg:", "aux:")) for k in params)
    assert checkpoint.load_card(prefix, last)["epoch"] == last
    assert os.path.getsize(checkpoint.checkpoint_path(prefix, last, "states")) > 0
    return last


KILL_STAGES = ("before-write", "before-rename", "after-rename")
CHECKPOINT_FILES = (f"{NET}-symbol.json", NET + "-{e:04d}.params", NET + "-{e:04d}.states",
                    NET + "-{e:04d}.json")


@pytest.mark.slow
def test_kill9_loop_newest_checkpoint_always_loads(synth_data, tmp_path):
    """21 SIGKILLs of train.py: 16 at named points of the checkpoint write, 5 at random times.

    Each run continues with ``--resume last`` and trains one epoch; after every kill the
    newest complete checkpoint loads and the next run resumes from it; at the end no
    temporary file is left and the final run completes.
    """
    prefix_arg = str(tmp_path / "ssd")
    prefix = f"{prefix_arg}_tiny_64"
    rng = random.Random(17)
    named = [f"{stage}:{name}" for name in CHECKPOINT_FILES for stage in KILL_STAGES]  # 12
    plan: list[str | float] = [f"before-rename:{NET}-{{e:04d}}.params",   # fresh run, 1st write
                               f"after-rename:{NET}-{{e:04d}}.json"]       # epoch 1 complete
    plan += named + [f"after-rename:{NET}-{{e:04d}}.params",              # again, from epoch 2
                     f"before-rename:{NET}-{{e:04d}}.json"]
    plan += [rng.random() for _ in range(5)]     # random moments of a 10-epoch run (fraction)
    outcomes, one_epoch_run = [], 10.0
    for point in plan:
        last = _assert_newest_loads(prefix)
        resume = "last" if last is not None else None
        epoch = (last or 0) + 1
        if isinstance(point, str):
            point = point.format(e=epoch)
            tic = time.time()
            out = _train_process(synth_data, prefix_arg, epoch, resume, kill_at=point)
            assert out.returncode == -signal.SIGKILL, (point, out.returncode, out.stderr[-2000:])
            if resume:
                assert f"Resume from {prefix}-{last:04d}.params" in out.stderr
            if point.startswith("after-rename") and point.endswith(".json"):
                one_epoch_run = time.time() - tic      # start-up + 1 epoch + checkpoint
        else:
            # a moment between start-up and the end of a 10-epoch run (at this machine's speed)
            delay = round(0.5 + point * 1.5 * one_epoch_run, 2)
            proc = _train_process(synth_data, prefix_arg, epoch + 9, resume, popen=True)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            point = f"random kill after {delay} s: exit {proc.returncode}"
        now = _assert_newest_loads(prefix)
        assert (now or 0) >= (last or 0)
        outcomes.append(f"{point} -> newest {now}, temporaries {_temporaries(tmp_path)}")
    assert len(plan) >= 21
    assert any("tmp" in line.split("temporaries")[1] for line in outcomes)
    last = _assert_newest_loads(prefix)
    out = _train_process(synth_data, prefix_arg, (last or 0) + 1, "last" if last else None)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _temporaries(tmp_path) == []
    assert _assert_newest_loads(prefix) == (last or 0) + 1
    print("\n".join(outcomes))


@pytest.mark.slow
def test_size_limit_during_checkpoint_write(synth_data, tmp_path):
    """RLIMIT_FSIZE below the size of a .params file: one error line, epoch 1 intact, no tmp."""
    from training import checkpoint

    prefix_arg = str(tmp_path / "ssd")
    prefix = f"{prefix_arg}_tiny_64"
    assert _train_process(synth_data, prefix_arg, 1).returncode == 0
    before = {name: os.path.getsize(tmp_path / name) for name in os.listdir(tmp_path)}
    limit = os.path.getsize(checkpoint.checkpoint_path(prefix, 1, "params")) // 2
    out = _train_process(synth_data, prefix_arg, 2, "last", rlimit_fsize=limit)
    assert out.returncode == 1, out.stderr[-2000:]
    last_line = out.stderr.strip().splitlines()[-1]
    assert last_line == (f"error: cannot write {prefix}-0002.params: file size limit reached "
                         f"(ulimit -f / RLIMIT_FSIZE {limit} bytes); removed the partial epoch "
                         f"2 files, newest complete checkpoint {prefix}-0001.params "
                         f"(--resume 1)")
    assert "Traceback" not in out.stderr and "FileStream" not in out.stderr
    assert _temporaries(tmp_path) == []
    assert checkpoint.list_checkpoint_epochs(prefix) == [1]
    assert _assert_newest_loads(prefix) == 1
    after = {name: os.path.getsize(tmp_path / name) for name in os.listdir(tmp_path)}
    assert after == before


def test_disk_full_while_writing_states_removes_the_partial_epoch(tmp_path):
    """A fault-injecting writer (ENOSPC half-way through .states) on the real Checkpointer."""
    import errno
    import types

    from config.mxnet_compat import mx

    from training import callbacks
    from training import checkpoint

    prefix = str(tmp_path / "ssd_tiny_64")

    def save_states(path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"x" * 1000)
        if module.fail:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    module = types.SimpleNamespace(_optimizer=None, num_skipped=0, epoch=0, nbatch=0,
                                   fail=False, save_optimizer_states=save_states)
    metric = mx.metric.Accuracy()
    writer = callbacks.Checkpointer(module, prefix, mx.sym.Variable("data"), end_epoch=3,
                                     save_period=1, card_base={}, eval_metric=metric,
                                     enabled=True, has_validation=False)
    params = {"w": mx.nd.ones((4, 4))}
    writer.on_epoch_end(0, None, params, {})
    module.fail = True
    with pytest.raises(checkpoint.FileWriteError) as info:
        writer.on_epoch_end(1, None, params, {})
    assert re.fullmatch(
        rf"cannot write {re.escape(prefix)}-0002\.states: no space left on the device "
        rf"\(\d+ bytes free in {re.escape(str(tmp_path))}\); removed the partial epoch 2 files, "
        rf"newest complete checkpoint {re.escape(prefix)}-0001\.params \(--resume 1\)",
        str(info.value))
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["ssd_tiny_64-0001.json", "ssd_tiny_64-0001.params", "ssd_tiny_64-0001.states",
         "ssd_tiny_64-symbol.json"])
    assert checkpoint.last_complete_epoch(prefix) == 1
    # writing epoch 1 again: its card goes first, so a failure leaves no half-new "complete" epoch
    with pytest.raises(checkpoint.FileWriteError):
        writer.on_epoch_end(0, None, params, {})
    assert checkpoint.last_complete_epoch(prefix) is None
    assert sorted(os.listdir(tmp_path)) == ["ssd_tiny_64-symbol.json"]


def test_size_limit_while_packing_rec(synth_data, tmp_path):
    out_rec = tmp_path / "out.rec"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    out = subprocess.run([sys.executable, "tools/pack_rec.py", synth_data.train_lst, "--root",
                          synth_data.devkit, "--rec", str(out_rec)], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {out_rec}: file size limit reached (ulimit -f / RLIMIT_FSIZE "
        f"100000 bytes)")
    assert os.listdir(tmp_path) == []


def test_size_limit_while_writing_evaluation_outputs(synth_data, tmp_path):
    from tests.test_evaluate import save_random_checkpoint

    save_random_checkpoint(str(tmp_path / "ssd_tiny_128"), synth_data.num_classes)
    out_dir = tmp_path / "eval"
    out_dir.mkdir()
    (out_dir / "results.json").write_text("{\"previous\": true}")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))

    argv = [sys.executable, "evaluate.py", "--rec-path", synth_data.val_rec, "--network", "tiny",
            "--data-shape", "128", "--num-class", str(synth_data.num_classes), "--class-names",
            ",".join(synth_data.class_names), "--prefix", str(tmp_path / "ssd_"), "--epoch", "1",
            "--cpu", "--batch-size", "8", "--output-dir", str(out_dir)]
    out = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=120, preexec_fn=limit)
    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {out_dir / 'results.json'}: file size limit reached (ulimit -f / "
        f"RLIMIT_FSIZE 100 bytes)")
    assert os.listdir(out_dir) == ["results.json"]
    assert (out_dir / "results.json").read_text() == "{\"previous\": true}"


# --------------------------------------------------------------------------------------------
# case 4: two runs on one prefix
# --------------------------------------------------------------------------------------------
def test_prefix_lock_refuses_another_process_and_dies_with_it(tmp_path):
    from training import checkpoint

    prefix = str(tmp_path / "ssd_tiny_64")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; "
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
         "os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); time.sleep(120)",
         prefix + ".lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(checkpoint.PrefixLockedError,
                           match=rf"^--prefix {re.escape(prefix)}: another training run "
                                 rf"\(pid {holder.pid}\) is writing these checkpoints"):
            checkpoint.PrefixLock(prefix).acquire()
    finally:
        holder.kill()                         # SIGKILL: the kernel drops its lock
        holder.communicate(timeout=30)
    with checkpoint.PrefixLock(prefix) as lock:
        assert Path(lock.path).read_text().strip() == str(os.getpid())
        with checkpoint.PrefixLock(prefix):    # re-entrant within this process
            pass
    assert Path(prefix + ".lock").read_text() == ""


def test_train_net_releases_the_prefix_lock_when_it_fails_before_training(synth_data, tmp_path):
    """An error between taking the lock and fit (here a batch larger than the record) must
    not keep the lock for the rest of the process (a library caller looping over train_net)."""
    from training import checkpoint
    from conftest import tiny_train_kwargs
    from train_net import train_net

    prefix = str(tmp_path / "ssd")
    with pytest.raises(ValueError, match="--batch-size"):
        train_net(**tiny_train_kwargs(synth_data, prefix, batch_size=10_000))
    lock_path = os.path.abspath(f"{prefix}_tiny_64.lock")
    assert os.path.isfile(lock_path)               # it was taken ...
    assert lock_path not in checkpoint.PrefixLock._held      # ... and released


@pytest.mark.slow
def test_second_run_on_the_same_prefix_refuses(synth_data, tmp_path):
    from training import checkpoint

    prefix_arg = str(tmp_path / "ssd")
    prefix = f"{prefix_arg}_tiny_64"
    lock_path = prefix + ".lock"
    first = _train_process(synth_data, prefix_arg, 40, popen=True)
    try:
        deadline = time.time() + 180           # generous: the machine may be loaded
        while time.time() < deadline:          # the first run holds the lock
            if os.path.isfile(lock_path) and Path(lock_path).read_text().strip() == str(first.pid):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first run never took the lock")
        tic = time.time()
        second = _train_process(synth_data, prefix_arg, 1)
        assert second.returncode == 2, second.stderr[-2000:]
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: --prefix {prefix}: another training run (pid {first.pid}) is writing these "
            f"checkpoints (lock {lock_path}); wait for it to finish or pick another --prefix")
        assert "Start training" not in second.stderr       # refused before any work
        assert time.time() - tic < 60
        assert first.poll() is None                         # the first run is unharmed
        while checkpoint.last_complete_epoch(prefix) is None and time.time() < deadline:
            time.sleep(0.2)
        assert first.poll() is None and checkpoint.last_complete_epoch(prefix) >= 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    # the kernel released the lock of the killed run: a new run takes the prefix
    last = checkpoint.last_complete_epoch(prefix)
    third = _train_process(synth_data, prefix_arg, last + 1, "last")
    assert third.returncode == 0, third.stderr[-2000:]
    assert _temporaries(tmp_path) == []


def test_iterator_names_the_file_when_mxnet_fails(synth_data, tmp_path):
    """Unchecked records reach MXNet's C++ reader: its error becomes one line naming the file."""
    from dataset.iterator import DetRecordIter

    rec = copy_rec(synth_data.train_rec, tmp_path)
    flip_image_bytes(rec, 1, 0.0)
    with pytest.raises(BadRecordError, match=rf"^{re.escape(rec)}: MXNet's ImageDetRecordIter "
                                             rf"failed reading it \(.*OpenCV.*\); list its bad "
                                             rf"records with python tools/prepare_dataset.py "
                                             rf"--check-rec"):
        for _ in DetRecordIter(rec, 8, 64, shuffle=False):   # the first batch is read at once
            pass


def test_stderr_probe_keeps_other_output(capfd):
    """Only the decoder's warnings count; another thread's log line still reaches stderr."""
    from dataset.record_check import _StderrProbe

    with _StderrProbe() as probe:
        os.write(2, b"Node[0] Epoch[3] Batch [20] Speed: 40 samples/sec\n")
        os.write(2, b"Corrupt JPEG data: premature end of data segment\n")
        assert probe.take() == "Corrupt JPEG data: premature end of data segment\n"
        assert probe.take() == ""
    assert capfd.readouterr().err == "Node[0] Epoch[3] Batch [20] Speed: 40 samples/sec\n"
