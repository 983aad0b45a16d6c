"""The benchmark runner works and every benchmark runs (tiny sizes; timings not asserted)."""

import pytest

from tests.benchmarks import runner


@pytest.mark.slow  # benchmark smoke run
def test_every_benchmark_runs_at_smoke_size():
    rows = runner.run(size="smoke", repeats=1, warmup=1, progress=lambda _: None)
    assert {r["benchmark"] for r in rows} == set(runner.load_all())
    assert "concat_fusion" in {r["benchmark"] for r in rows}
    for r in rows:
        assert r["mmrep_ms"] > 0 and r["reference_ms"] > 0
        assert r["ratio"] == pytest.approx(r["mmrep_ms"] / r["reference_ms"])
    table = runner.format_table(rows, runner.machine_description())
    assert "| concat_fusion |" in table and "TensorFlow" in table


def test_unknown_benchmark_is_named():
    with pytest.raises(ValueError, match="unknown benchmarks \\['nope'\\]"):
        runner.run(["nope"], progress=lambda _: None)


def test_time_pair_interleaves_and_takes_medians():
    calls = []
    first, second = runner.time_pair(
        lambda: calls.append("a"), lambda: calls.append("b"), repeats=3, warmup=1
    )
    assert calls == ["a", "b"] * 4
    assert first >= 0 and second >= 0
