"""benchmarks/benchmark_pack.py runs on a tiny input and prints its figures (no timing asserted)."""
import json

import pytest

from benchmarks.benchmark_pack import main, parse_counts


def test_runs_and_writes_every_field(tmp_path, capsys):
    out = tmp_path / "pack.json"
    assert main(["--num-images", "6", "--min-side", "64", "--max-side", "80", "--threads", "1,2",
                 "--repeat", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "speed-up vs 1" in printed and "load average" in printed
    result = json.loads(out.read_text())
    assert result["num_images"] == 6
    assert set(result["best_s"]) == {"1", "2"} and all(t > 0 for t in result["best_s"].values())
    assert result["speedup"]["1"] == pytest.approx(1.0)


@pytest.mark.parametrize("value", ["", "0,2", "one"])
def test_bad_thread_list_is_refused(value):
    with pytest.raises(ValueError, match="--threads"):
        parse_counts(value)


def test_cli_bad_input_exits_2(capsys):
    assert main(["--threads", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: --threads")
