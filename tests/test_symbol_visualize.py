"""tools/visualize_net.py: printed summary, graph picture or a clear message."""
from __future__ import annotations

import shutil

from tools import visualize_net


def test_summary_lists_layers_anchors_and_totals(capsys, tmp_path):
    status = visualize_net.main(["--network", "tiny", "--data-shape", "128", "--num-classes",
                                 "3", "--output", str(tmp_path / "tiny")])
    assert status == 0
    out = capsys.readouterr().out
    assert "tiny_conv1" in out and "(16, 64, 64)" in out and "432" in out
    assert "multi_feat_4_conv_3x3_relu" in out
    assert "total anchors: 1,364" in out
    assert "detection_output (1, 1364, 6)" in out
    if shutil.which("dot"):
        assert (tmp_path / "tiny.png").is_file()
    else:
        assert "no graph picture" in out and "graphviz" in out
        assert not list(tmp_path.iterdir())  # nothing half-written


def test_train_graph_summary_vgg300(capsys, tmp_path):
    assert visualize_net.main(["--train", "--output", str(tmp_path / "vgg")]) == 0
    out = capsys.readouterr().out
    assert "total anchors: 8,732" in out
    assert "total parameters: 26,285,486" in out
    assert "det_out_output (1, 8732, 6)" in out


def test_bad_network_exits_2(capsys):
    assert visualize_net.main(["--network", "vgg19"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown network 'vgg19'")
