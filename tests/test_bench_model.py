"""benchmarks/bench_model.py: the framework list ("not installed", inference-only peers), the floor
arithmetic and the agreement check, on a tiny model with the NumPy reference backend (seconds)."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_model as bm  # noqa: E402


def table(out: str, title: str) -> dict:
    """``{row label: [cells]}`` of the markdown table under the heading that starts with ``title``."""
    lines = out[out.index("## " + title):].splitlines()[2:]
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return {"head": head[1:], **rows}


def test_floor_is_twice_the_multiply_adds_over_the_sgemm_rate():
    macs = {"forward": 3_000_000, "nominal": 3_500_000, "image": 200_000}
    assert bm.floor_seconds("infer", 4, macs, 1e9) == pytest.approx(2 * 4 * 3e6 / 1e9)
    assert bm.floor_seconds("train", 4, macs, 1e9) == pytest.approx(2 * 4 * (3 * 3e6 - 2e5) / 1e9)


def test_tables_give_each_time_as_a_multiple_of_the_floor_and_the_ratios(capsys):
    args = bm.parse_args(["--workloads", "infer1", "train256", "--frameworks", "tinydeeplab", "torch",
                          "onnxruntime"])
    floor = {"sgemm": {"n": 64, "best_s": 1.0, "flops": 1e11},
             "macs": {"512": {"forward": 5e9, "nominal": 6e9, "image": 1e8},
                      "256": {"forward": 1.25e9, "nominal": 1.5e9, "image": 2.5e7}}}
    floors = bm.workload_floors(floor, args.workloads, args)
    assert floors == pytest.approx({"infer1": 0.1, "train256": 2 * 4 * (3 * 1.25e9 - 2.5e7) / 1e11})

    def r(t):
        return {"median_s": t, "min_s": t, "first_s": t, "build_s": 0.0, "peak_rss_mib": 1.0,
                "rss_model_mib": 1.0, "times": [t]}
    results = {"infer1": {"tinydeeplab": r(0.3), "torch": r(0.2), "onnxruntime": r(0.15)},
               "train256": {"tinydeeplab": r(1.2), "torch": r(1.5), "onnxruntime": {"absent": "n/a"}}}
    bm.print_tables(results, args.workloads, args.frameworks, floors)
    out = capsys.readouterr().out
    multiple = table(out, "Time as a multiple of the floor")
    assert multiple["infer1"] == ["3.00", "2.00", "1.50"]
    assert multiple["train256"] == [f"{1.2 / floors['train256']:.2f}", f"{1.5 / floors['train256']:.2f}", "-"]
    ratios = table(out, "tinydeeplab / peer")
    assert ratios["infer1"] == ["1.50", "2.00", "2.00 (onnxruntime)"]
    assert ratios["train256"] == ["0.80", "-", "0.80 (torch)"]
    assert table(out, "Median time")["train256"][-1] == "n/a"


def test_a_run_lists_missing_frameworks_and_checks_the_outputs_agree(capsys, monkeypatch, tmp_path):
    """tinydeeplab and tinydeeplab's own ONNX graph in ONNX Runtime (when installed) on the tiny recipe; a
    framework whose packages are missing is listed, not an error."""
    monkeypatch.setattr(bm, "why_not_installed", lambda fw: None if fw in ("tinydeeplab", "onnxruntime-tdl")
                        and bm.importable("onnxruntime") else "pretend-missing not importable")
    out_json = tmp_path / "r.json"
    bm.main(["--model", "tiny", "--size", "32", "--workloads", "infer1", "train256", "--frameworks", "tinydeeplab",
             "torch", "onnxruntime-tdl", "--repeats", "1", "--warmup", "1", "--backend", "numpy",
             "--sgemm-size", "64", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert "# torch: not installed (pretend-missing not importable)" in out
    times = table(out, "Median time")
    assert times["head"] == ["floor", "tinydeeplab", "torch", "onnxruntime-tdl"]
    assert times["infer1"][2] == times["train256"][2] == "not installed"
    assert float(times["infer1"][1]) > 0 and float(times["train256"][1]) > 0
    assert times["train256"][3] == ("n/a" if bm.importable("onnxruntime") else "not installed")
    assert "Errors:" not in out
    rate = float(re.search(r"# sgemm \(NumPy float32 64x64 matmul, best of 5\): ([\d.]+) GFLOP/s", out).group(1))
    assert rate > 0
    saved = json.loads(out_json.read_text())
    macs, flops = saved["floor"]["macs"]["32"], saved["floor"]["sgemm"]["flops"]
    assert macs == bm.model_macs("tiny", 32)
    assert saved["floor_s"]["infer1"] == pytest.approx(2 * macs["forward"] / flops)
    assert saved["floor_s"]["train256"] == pytest.approx(2 * 4 * (3 * macs["forward"] - macs["image"]) / flops)
    assert float(times["infer1"][0]) == pytest.approx(saved["floor_s"]["infer1"], rel=1e-3)
    if bm.importable("onnxruntime"):
        err = float(table(out, "Agreement")["infer1"][1])
        assert 0 < err < 1e-4                          # the same weights, float32 round-off


def test_relative_error_is_relative_to_the_reference():
    ref = np.array([[1.0, -4.0], [2.0, 0.0]])
    assert bm.relative_error(ref + np.array([[0.0, 0.0], [0.4, 0.0]]), ref) == pytest.approx(0.1)


def test_multiply_adds_of_the_image_convolutions():
    macs = bm.model_macs("tiny", 64)
    assert macs["image"] == 32 * 32 * 7 * 7 * 3 * 16          # the stem: 7x7/2, 3 -> 16 channels, 32x32 out
    assert macs["image"] < macs["forward"] <= macs["nominal"]


def test_training_agreement_compares_the_loss_and_all_gradients_together(tmp_path):
    ref = {"a.kernel": np.array([3.0, 0.0]), "b.gamma": np.array([[4.0]])}              # |g_ref| = 5
    got = {"a.kernel": np.array([3.0, 0.3]), "b.gamma": np.array([[4.4]])}              # |g - g_ref| = 0.5
    np.savez(tmp_path / "train256-tinydeeplab.npz", **ref)
    np.savez(tmp_path / "train256-torch.npz", **got)
    results = {"train256": {"tinydeeplab": {"median_s": 1.0, "loss": 2.0}, "torch": {"median_s": 1.0, "loss": 2.002},
                            "keras-tf": {"median_s": 1.0}}}
    assert bm.agreement(results, "train256", "torch", tmp_path) == "loss 1.0e-03, gradients 1.0e-01"
    assert bm.agreement(results, "train256", "keras-tf", tmp_path) == "own weights"
