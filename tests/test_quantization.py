"""INT8 quantization of the tiny preset (MKL-DNN) and the forward benchmark."""
from __future__ import annotations

import json
import os

from config.mxnet_compat import mx
import numpy as np
import pytest

from evaluate.evaluate_net import load_params
from tests.test_evaluate import SHAPE, load_cli, save_random_checkpoint


@pytest.fixture(scope="module")
def checkpoint(synth_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant_ckpt")
    save_random_checkpoint(str(folder / f"ssd_tiny_{SHAPE}"), synth_data.num_classes)
    return folder


def quant_args(synth_data, checkpoint, *extra):
    return ["--network", "tiny", "--data-shape", str(SHAPE),
            "--num-class", str(synth_data.num_classes),
            "--class-names", ",".join(synth_data.class_names), "--prefix", str(checkpoint / "ssd_"),
            "--epoch", "1", "--rec-path", synth_data.val_rec, "--batch-size", "4",
            "--num-calib-batches", "2", "--bench-batch", "2", "--bench-batches", "2", *extra]


def node_ops(symbol) -> list[dict]:
    return json.loads(symbol.tojson())["nodes"]


def test_quantize_ssd_graph(synth_data, checkpoint):
    cli = load_cli("quantization")
    from config.config import cfg
    from dataset.iterator import DetRecordIter
    from symbol.symbol_factory import get_symbol
    symbol = get_symbol("tiny", SHAPE, synth_data.num_classes)
    args, auxs = load_params(str(checkpoint / f"ssd_tiny_{SHAPE}"), 1)
    calib = cli.data_only_iter(DetRecordIter(synth_data.val_rec, 4, (3, SHAPE, SHAPE), **cfg.valid))
    qsym, qargs, qauxs, excluded = cli.quantize_ssd(symbol, args, auxs, calib, 8, "naive",
                                                    exclude_first_conv=True)
    nodes = node_ops(qsym)
    ops = {node["op"] for node in nodes}
    assert "_contrib_quantize_v2" in ops and "_contrib_MultiBoxDetection" in ops
    convs = [n for n in nodes if n["op"] == "_sg_mkldnn_conv"]
    quantized = [n for n in convs if n.get("attrs", {}).get("quantized") == "true"]
    assert excluded and len(quantized) == len(convs) - 1     # every conv but the first
    first = [n for n in convs if n["name"] == excluded[0]]
    assert first and first[0].get("attrs", {}).get("quantized") != "true"
    # the quantized graph runs and gives detections of the same layout
    module = mx.mod.Module(qsym, label_names=None)
    module.bind([("data", (2, 3, SHAPE, SHAPE))], for_training=False)
    module.set_params(qargs, qauxs)
    module.forward(mx.io.DataBatch([mx.nd.random.uniform(-100, 100, (2, 3, SHAPE, SHAPE))]),
                   is_train=False)
    out = module.get_outputs()[0].asnumpy()
    fp32 = mx.mod.Module(symbol, label_names=None)
    fp32.bind([("data", (2, 3, SHAPE, SHAPE))], for_training=False)
    assert out.shape == fp32.output_shapes[0][1]
    kept = out[out[:, :, 0] >= 0]
    assert kept.size and np.all((kept[:, 1] >= 0) & (kept[:, 1] <= 1))


@pytest.mark.slow
def test_quantization_cli_saves_evaluates_and_times(synth_data, checkpoint, tmp_path, capsys):
    cli = load_cli("quantization")
    status = cli.main(quant_args(synth_data, checkpoint, "--calib-mode", "none",
                                 "--output-dir", str(tmp_path)))
    out = capsys.readouterr().out
    assert status == 0
    prefix = str(checkpoint / f"qssd_tiny_{SHAPE}")                   # calib none -> qssd_
    assert os.path.isfile(prefix + "-symbol.json") and os.path.isfile(prefix + "-0001.params")
    assert "int8/fp32 speed" in out and f"{synth_data.num_val} images" in out
    report = json.loads((tmp_path / "comparison.json").read_text())
    assert set(report["rows"]) == {"fp32", "int8"}
    assert report["rows"]["int8"]["images_per_sec"] > 0
    # the benchmark reads the quantized model too
    bench = load_cli("benchmark_score")
    assert bench.main(["--network", "tiny", "--shape", str(SHAPE), "--class_num",
                       str(synth_data.num_classes), "-b", "2", "--num-batches", "2",
                       "--warmup", "1", "--int8-prefix", prefix, "--int8-epoch", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.startswith(("fp32", "int8"))]
    assert [r[0] for r in rows] == ["fp32", "int8"]
    assert all(r[1] == "2" and float(r[2]) > 0 and float(r[3]) > 0 for r in rows)


def test_quantization_cli_errors(synth_data, checkpoint, capsys):
    cli = load_cli("quantization")
    args = quant_args(synth_data, checkpoint)
    args[args.index("--rec-path") + 1] = "/nonexistent.rec"
    assert cli.main(args) == 2
    assert "--rec-path /nonexistent.rec not found" in capsys.readouterr().err


def test_benchmark_sizes_and_shape(capsys):
    bench = load_cli("benchmark_score")
    assert bench.batch_sizes(0, 32) == [1, 2, 4, 8, 16, 32]
    assert bench.batch_sizes(3, 32) == [3]
    with pytest.raises(ValueError, match="--batch_size"):
        bench.batch_sizes(-1, 32)
    # the input really has --shape pixels (the original always fed 300)
    assert bench.main(["-n", "tiny", "-w", "96", "-b", "1", "--num-batches", "1",
                       "--warmup", "0", "--class_num", "2"]) == 0
    assert "input 96x96" in capsys.readouterr().out
    assert bench.main(["-n", "tiny", "-w", "100", "-b", "1"]) == 2
    assert "not supported by tiny" in capsys.readouterr().err


def test_entropy_calibration_needs_scipy(synth_data, checkpoint, capsys):
    import importlib.util
    if importlib.util.find_spec("scipy") is not None:
        pytest.skip("scipy is installed: entropy calibration is available")
    cli = load_cli("quantization")
    assert cli.main(quant_args(synth_data, checkpoint, "--calib-mode", "entropy")) == 2
    assert "--calib-mode entropy needs scipy" in capsys.readouterr().err
