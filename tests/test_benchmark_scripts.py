"""The benchmark scripts' command lines (benchmarks/peers.py), run in a child process: the
scripts put their folder first on sys.path, which the test process must not inherit."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def peers_plot(*argv):
    """Where ``python benchmarks/peers.py ARGV`` would write its plot."""
    code = f"import sys; sys.path.insert(0, 'benchmarks'); import peers; print(peers._parse_args({list(argv)!r}).plot)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_quick_peers_run_leaves_the_tracked_plot_alone():
    """Was: ``--quick`` wrote its smoke-run plot over docs/peers.png, which docs/performance.md shows."""
    quick = peers_plot("--quick")
    assert quick.endswith(".png") and Path(quick).resolve() != (ROOT / "docs" / "peers.png").resolve()
    assert peers_plot() == "docs/peers.png"
    assert peers_plot("--quick", "--plot", "docs/peers.png") == "docs/peers.png"  # asked for: written there
    assert peers_plot("--quick", "--plot", "") == ""


def run_child(code, timeout=300):
    """Run ``code`` in a child process with benchmarks/ first on its sys.path; its stdout."""
    done = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'benchmarks')\n" + code],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_bag_of_words_data_is_deterministic_sparse_and_balanced():
    run_child("""
import numpy as np
import peers_sparse as ps
x, y = ps.make_bow(400, 100)
x2, y2 = ps.make_bow(400, 100)
assert x.shape == (500, ps.BOW_FEATURES) and x.dtype == np.float32 and x.indices.dtype == np.int32
assert (x != x2).nnz == 0 and (y == y2).all()
nnz = np.diff(x.indptr)
assert 85 < nnz.mean() < 115, nnz.mean()
assert np.allclose(np.sqrt(x.multiply(x).sum(axis=1)), 1.0, atol=1e-5)  # unit rows
assert x.data.min() > 0
counts = np.bincount(y[:400], minlength=ps.BOW_CLASSES)
assert y.min() >= 0 and y.max() < ps.BOW_CLASSES and counts.max() < 4 * 400 / ps.BOW_CLASSES, counts
# Zipf: the most frequent word in far more rows than the median word that occurs
df = np.bincount(x.indices, minlength=ps.BOW_FEATURES)
assert df.max() > 20 * np.median(df[df > 0])
w = ps.bow_weights()
assert [a.shape for a in w] == [(50000, 256), (256,), (256, 20), (20,)] and all(a.dtype == np.float32 for a in w)
assert np.abs(w[0]).max() <= np.sqrt(6 / 50256) and np.abs(w[0]).max() > 0.9 * np.sqrt(6 / 50256)
""")


@pytest.mark.slow  # worker processes, a 50000-wide model / torch and onnxruntime imports: ~10 s
def test_the_bag_of_words_run_measures_or_skips_fastnn_with_the_reason():
    """fastnn and scikit-learn (PyTorch is left out: slow to import), tiny sizes, real workers."""
    out = run_child("""
import json, os, tempfile
import peers_runs, peers_goals
from peers_sparse import UNSUPPORTED
env = {k: os.environ[k] for k in ("PATH", "HOME", "VIRTUAL_ENV", "PYTHONPATH") if k in os.environ}
with tempfile.TemporaryDirectory() as d:
    bow = peers_runs.measure_bow(["bow_fastnn", "bow_sklearn"], 1, d, lambda p: env, True, 2, lambda m: None,
                                 sizes=(600, 200, 512))
sk = bow["peers"]["bow_sklearn"]
assert len(sk["seconds"]) == 2 and sk["samples_per_s"] > 0 and 0 <= sk["accuracy_median"] <= 1
assert sk["peak_mb"] >= sk["rss"]["data"] > 0
fast = bow["peers"]["bow_fastnn"]
if "error" in fast:
    assert fast["error"].startswith(UNSUPPORTED), fast["error"]
    statuses = {s for g, s, t in peers_goals.goals({"bow": bow})}
    assert statuses == {"SKIP"}, statuses
else:
    assert fast["samples_per_s"] > 0 and 0 <= fast["accuracy_median"] <= 1
lines = []
peers_goals.tables({"bow": bow}, lines)
assert "bag of words" in lines[0] and any("scikit-learn" in l for l in lines)
print(json.dumps(bow["peers"]["bow_fastnn"].get("error", "measured")))
""")
    assert out.strip()


def _synthetic_run():
    """A run dict with the new parts only, figures chosen so that each goal's status is known."""
    seed = {"config": "seed", "sizes": [784, 100, 50, 10], "batch_size": 50, "rows": 1000, "style": "plain",
            "torch_best": None, "peers": {}}
    wide_std = {"config": "wide_std", "sizes": [784, 1024, 1024, 10], "batch_size": 256, "rows": 1000,
                "style": "plain", "data": "std", "torch_best": "torch_fused",
                "peers": {"fastnn": {"samples_per_s": 1000.0}, "torch_fused": {"samples_per_s": 900.0},
                          "torch_default": {"samples_per_s": 500.0}, "sklearn": {"samples_per_s": 1100.0}}}
    peer = {"seconds": [1.0], "accuracy_median": 0.5, "warm_up_s": 1.0, "rss": {"data": 200.0}}
    bow = {"data": {"nnz_per_row": 100.0, "train_rows": 600, "test_rows": 200}, "rows": 500, "batch_size": 256,
           "torch_best": "bow_torch_fused",
           "peers": {"bow_fastnn": dict(peer, samples_per_s=6000.0, peak_mb=400.0),
                     "bow_torch_fused": dict(peer, samples_per_s=4000.0, peak_mb=600.0),
                     "bow_torch_foreach": dict(peer, samples_per_s=2000.0, peak_mb=600.0),
                     "bow_sklearn": dict(peer, samples_per_s=1000.0, peak_mb=500.0)}}
    latency = {"seed": {"calls": 10, "torch": None, "seconds": {"fastnn_predict": [2e-6] * 5, "fastnn_call": [3e-6] * 5,
                                                                "onnxruntime": [2.5e-6] * 5}},
               "wide": {"calls": 10, "torch": None, "seconds": {"fastnn_predict": [1.3e-4] * 5,
                                                                "onnxruntime": [1e-4] * 5}}}
    parallel = {"rows": 512, "batch_size": 256, "1": {"seconds": [3.0, 3.2, 2.9], "products_s": 2.0},
                "2": {"seconds": [1.5, 1.4, 1.6], "products_s": 1.0}}
    return {"configs": [seed, wide_std], "bow": bow, "latency": latency, "parallel": parallel,
            "load_start": [0.0], "load_end": [0.0], "threads": 2}


def test_the_new_goals_pass_and_fail_on_their_figures():
    out = run_child(f"""
import json
import peers_report, peers_goals
run = {_synthetic_run()!r}
goals = peers_goals.goals(run) + [g for g in peers_report.goals(run, 100.0, 10.0) if g[0].startswith("wide_std")]
run["parallel"] = {{"skip": "1 usable CPU"}}
goals += [g for g in peers_goals.goals(run) if g[0].startswith("parallel")]
print(json.dumps([[g, s] for g, s, t in goals]))
""")
    import json
    goals = json.loads(out.strip().splitlines()[-1])

    def status(*words):
        found = [s for g, s in goals if all(w in g for w in words)]
        assert found, (words, goals)
        return found

    assert status("bag of words", "scikit-learn") == ["PASS"]      # 6x, 400 MB < 500 MB
    assert status("bag of words", "PyTorch") == ["FAIL"]           # 1.5x the faster PyTorch variant (fused)
    assert status("latency (seed)") == ["PASS"]                    # 2.0 us <= 2.5 us
    assert status("latency (wide)") == ["FAIL"]                    # 1.3x > 1.2x
    assert status("parallel passes") == ["PASS", "SKIP"]           # outside the products 1.0 s vs 0.5 s: 2x
    assert status("wide_std") == ["FAIL"]                          # scikit-learn 1100/s > fastnn 1000/s


@pytest.mark.slow  # worker processes, a 50000-wide model / torch and onnxruntime imports: ~10 s
def test_onnx_runtime_predicts_what_fastnn_exported_and_the_row_calls_return_probabilities():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    run_child("""
import os, tempfile
import numpy as np
from peers_adapters import FastnnPeer, TorchFusedPeer
from peers_latency import NumpyPeer
from peers_onnx import OnnxRuntimePeer
rng = np.random.default_rng(0)
data = (rng.random((64, 20), dtype=np.float32), rng.integers(0, 3, 64), rng.random((16, 20), dtype=np.float32),
        rng.integers(0, 3, 16))
fast, ort, torch_peer = FastnnPeer(1, {}), OnnxRuntimePeer(1, {}), TorchFusedPeer(1, {})
for p in (fast, ort, torch_peer):
    p.set_data(*data)
fast.build((20, 8, 3), 16)
fast.fit_rows(64, 16, 0)
by_hand = NumpyPeer(1, {})
by_hand.set_data(*data)
with tempfile.TemporaryDirectory() as d:
    ort.load_model(fast.export_onnx(os.path.join(d, "m.onnx")))
    assert by_hand.load_weights(fast.save_weights(os.path.join(d, "w.npz"))) == 2
expected = fast.probabilities()
assert not np.allclose(expected, expected[:1])  # trained, and rows differ
np.testing.assert_allclose(ort.probabilities(), expected, rtol=1e-4, atol=1e-6)
row = data[2][:1]
for peer, mode in ((fast, "predict"), (fast, "call"), (fast, "predictor"), (ort, "call"), (by_hand, "call")):
    out = peer.one_row_call(mode, row)()
    out = out[0] if isinstance(out, list) else out
    np.testing.assert_allclose(out, expected[:1], rtol=1e-4, atol=1e-6)
    assert peer.latency_seconds(mode, 3) > 0
assert fast.latency_seconds("njit", 3) > 0  # the predictor in a compiled loop
torch_peer.build((20, 8, 3), 16)  # the shared initial weights, untrained: the same forward as numpy's
w = torch_peer.initial
h = np.maximum(row @ w[0] + w[1], 0) @ w[2] + w[3]
p = np.exp(h - h.max()) / np.exp(h - h.max()).sum()
np.testing.assert_allclose(torch_peer.one_row_call("call", row)().numpy(), p, rtol=1e-4, atol=1e-6)
""")


def test_the_latency_goals_pass_and_fail_on_their_figures():
    out = run_child("""
import json
import latency
results = {"seed": {"model.predict(row)": 6.0, "model(row)": 5.5, "predictor inside @njit": 3.2, "ONNX Runtime": 5.0},
           "wide": {"model.predict(row)": 100.0, "model(row)": 130.0, "ONNX Runtime": 90.0}}
print(json.dumps([[g, s] for g, s, t in latency.goals(results)]))
""")
    import json
    assert json.loads(out.strip().splitlines()[-1]) == [
        ["seed, the predictor inside @njit <= 3.0 us", "FAIL"],                            # 3.2 us
        ["seed, fastnn's faster call from Python <= 1.0x ONNX Runtime's", "FAIL"],        # 5.5 > 5.0
        ["wide, fastnn's faster call from Python <= 1.2x ONNX Runtime's", "PASS"]]        # 100 <= 108


@pytest.mark.slow  # four worker processes, fastnn's predictor compiled: about a minute
def test_the_latency_script_prints_every_caller_and_the_goals():
    import os
    if not os.environ.get("FASTNN_DATA"):
        pytest.skip("needs MNIST under FASTNN_DATA")
    done = subprocess.run([sys.executable, "benchmarks/latency.py", "--quick", "--configs", "seed", "--threads", "1"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    table = done.stdout
    for label in ("model.predict(row)", "model(row)", "predictor from Python", "predictor inside @njit", "NumPy by hand"):
        line = next(row for row in table.splitlines() if row.startswith(label))
        assert float(line.split()[-1]) > 0
    assert "goal: seed, the predictor inside @njit <= 3.0 us:" in table
