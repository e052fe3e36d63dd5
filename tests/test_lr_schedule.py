"""Exact numbers of fit.get_lr_scheduler (REFERENCE.md §3.5 plus linear warm-up)."""
from __future__ import annotations

import logging

from config.mxnet_compat import mx
import pytest

from fit import get_lr_scheduler, get_optimizer_params, parse_lr_steps


def test_default_schedule_matches_original():
    # 16551 // 32 = 517 updates per epoch, decays at epochs 80 and 160
    lr, sched = get_lr_scheduler(0.002, "80, 160", 0.1, 16551, 32, 0)
    assert lr == 0.002
    assert isinstance(sched, mx.lr_scheduler.MultiFactorScheduler)
    assert sched.step == [517 * 80, 517 * 160]
    assert sched(517 * 80) == pytest.approx(0.002)
    assert sched(517 * 80 + 1) == pytest.approx(0.0002)
    assert sched(517 * 160 + 1) == pytest.approx(0.00002)


def test_resume_pre_decays_and_shifts_steps(caplog):
    with caplog.at_level(logging.INFO):
        lr, sched = get_lr_scheduler(0.002, "80, 160", 0.1, 16551, 32, 100)
    assert lr == pytest.approx(0.0002)
    assert sched.step == [517 * 60]
    assert "Adjusted learning rate to" in caplog.text
    # resuming exactly at a step epoch applies that decay too
    lr, sched = get_lr_scheduler(0.002, "80, 160", 0.1, 16551, 32, 80)
    assert lr == pytest.approx(0.0002) and sched.step == [517 * 80]
    lr, sched = get_lr_scheduler(0.002, "80, 160", 0.1, 16551, 32, 200)
    assert lr == pytest.approx(0.00002) and sched is None


def test_factor_at_least_one_disables_decay():
    assert get_lr_scheduler(0.01, "1, 2", 1.0, 100, 10, 0) == (0.01, None)


def test_num_workers_divides_epoch():
    _, sched = get_lr_scheduler(0.1, "2", 0.1, 100, 10, 0, num_workers=2)
    assert sched.step == [2 * 5]     # (100 // 2) // 10 = 5 updates per epoch


def test_linear_warmup_values_and_resume_continuity():
    # 40 images / batch 4 = 10 updates per epoch; 2 warm-up epochs = 20 updates
    lr, full = get_lr_scheduler(0.1, "3", 0.5, 40, 4, 0, warmup_epochs=2)
    assert lr == 0.1
    for k in range(1, 20):
        assert full(k) == pytest.approx(0.1 * k / 20)
    assert full(20) == pytest.approx(0.1)
    assert full(30) == pytest.approx(0.1) and full(31) == pytest.approx(0.05)
    # resuming after epoch 1 continues the same ramp and decay (schedulers are stateful:
    # query fresh ones with increasing update counts)
    _, full = get_lr_scheduler(0.1, "3", 0.5, 40, 4, 0, warmup_epochs=2)
    _, resumed = get_lr_scheduler(0.1, "3", 0.5, 40, 4, 1, warmup_epochs=2)
    for k in range(1, 30):
        assert resumed(k) == pytest.approx(full(10 + k)), k


def test_warmup_without_decay_steps():
    lr, sched = get_lr_scheduler(0.1, "", 0.1, 40, 4, 0, warmup_epochs=1)
    assert sched(5) == pytest.approx(0.05)
    assert sched(10) == pytest.approx(0.1) and sched(10_000) == pytest.approx(0.1)
    assert get_lr_scheduler(0.1, "", 0.1, 40, 4, 1, warmup_epochs=1) == (0.1, None)


@pytest.mark.parametrize("steps", ["80,40", "a, b", "0, 10", "10,10"])
def test_bad_steps_name_the_flag(steps):
    with pytest.raises(ValueError, match="--lr-steps"):
        get_lr_scheduler(0.1, steps, 0.1, 100, 10, 0)


def test_bad_factor_names_the_flag():
    with pytest.raises(ValueError, match="--lr-factor"):
        get_lr_scheduler(0.1, "10", 0.0, 100, 10, 0)


def test_parse_lr_steps_accepts_spaces():
    assert parse_lr_steps(" 80, 160 ,") == [80, 160]


def test_optimizer_params_follow_the_reference():
    params = get_optimizer_params("sgd", 0.002, 0.9, 5e-4, None, num_devices=2)
    assert params["rescale_grad"] == 0.5 and params["momentum"] == 0.9
    assert params["clip_gradient"] is None and params["wd"] == 5e-4
    adam = get_optimizer_params("adam", 0.002, 0.9, 5e-4, None, num_devices=1)
    assert "momentum" not in adam
    rms = get_optimizer_params("rmsprop", 0.002, 0.9, 5e-4, None, num_devices=1)
    assert rms["learning_rate"] == pytest.approx(0.0002)
    with pytest.raises(ValueError, match="--optimizer"):
        get_optimizer_params("adadelta2", 0.1, 0.9, 0, None, 1)


def test_cosine_schedule_warms_up_decays_and_resumes_on_the_same_curve():
    # 100 images, batch 10: 10 updates per epoch; 2 warm-up epochs, 10 epochs in all
    lr, sched = get_lr_scheduler(0.1, "80, 160", 0.1, 100, 10, 0, warmup_epochs=2,
                                     schedule="cosine", end_epoch=10)
    assert lr == 0.0
    assert sched(10) == pytest.approx(0.05)                    # half-way through the warm-up
    assert sched(20) == pytest.approx(0.1)                     # peak after the warm-up
    assert sched(60) == pytest.approx(0.1e-3 + (0.1 - 0.1e-3) * 0.5)   # half-way down
    assert sched(100) == pytest.approx(0.1e-3)                 # --lr / 1000 at the end
    assert sched(500) == pytest.approx(0.1e-3)
    _, resumed = get_lr_scheduler(0.1, "80, 160", 0.1, 100, 10, 4, warmup_epochs=2,
                                      schedule="cosine", end_epoch=10)
    for update in (1, 7, 33, 60):
        assert resumed(update) == pytest.approx(sched(40 + update))


def test_cosine_schedule_needs_an_end_epoch_and_a_known_name():
    with pytest.raises(ValueError, match="--lr-schedule cosine needs --end-epoch"):
        get_lr_scheduler(0.1, "80", 0.1, 100, 10, 5, schedule="cosine", end_epoch=5)
    with pytest.raises(ValueError, match="--lr-schedule 'linear'"):
        get_lr_scheduler(0.1, "80", 0.1, 100, 10, 0, schedule="linear", end_epoch=5)
