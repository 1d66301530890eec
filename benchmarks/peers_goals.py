"""The report's tables and goals of the runs in ``peers_runs.py``: bag of words, one-row latency
and the parallel passes (``peers_report.report`` calls ``tables`` and ``goals``). The goals'
figures are stated once, in ``peers_report``."""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers_report as pr  # noqa: E402
from peers_runs import outside_products  # noqa: E402

BOW_LABELS = {"bow_fastnn": "fastnn fit(csr_matrix)", "bow_torch_fused": "PyTorch sparse.mm, Adam fused",
              "bow_torch_foreach": "PyTorch sparse.mm, Adam foreach", "bow_sklearn": "scikit-learn MLPClassifier"}
LATENCY_LABELS = {"fastnn_predict": "fastnn model.predict(row)", "fastnn_call": "fastnn model(row)",
                  "onnxruntime": "ONNX Runtime session.run"}


def _bow_key(bow, peer):
    return bow.get("torch_best") if peer == "torch" else f"bow_{peer}"


def _bow_table(bow, lines):
    if "error" in bow:
        lines.append(f"bag of words: {bow['error']}")
        return
    d = bow["data"]
    lines.append(f"bag of words: 50000-256-20 (ReLU, softmax + cross-entropy, Adam 1e-3), batch {bow['batch_size']}, "
                 f"CSR float32, {d['nnz_per_row']:.0f} nonzeros a row (Zipf word frequencies), 20 classes from a "
                 f"sparse linear teacher; {bow['rows']:,} rows per measured pass of {d['train_rows']:,} training rows, "
                 f"test accuracy on {d['test_rows']:,} rows; a fresh worker per peer")
    lines.append(f"  {'peer':<40}{'samples/s':>11}{'min-max':>19}{'fastnn/peer':>13}{'test acc':>10}{'peak MB':>9}"
                 f"{'training MB':>13}{'warm-up s':>11}")
    base = bow["peers"].get("bow_fastnn", {}).get("samples_per_s")
    for peer, e in bow["peers"].items():
        name = BOW_LABELS.get(peer, peer) + (" (best)" if peer == bow.get("torch_best") else "")
        if "samples_per_s" not in e:
            lines.append(f"  {name:<40}skipped: {e.get('error', 'no measurement')}")
            continue
        rates = [bow["rows"] / s for s in e["seconds"]]
        ratio = f"{base / e['samples_per_s']:.2f}x" if base else "-"
        lines.append(f"  {name:<40}{e['samples_per_s']:>11,.0f}{f'{min(rates):,.0f}-{max(rates):,.0f}':>19}{ratio:>13}"
                     f"{e['accuracy_median']:>10.4f}{e['peak_mb']:>9.0f}{e['peak_mb'] - e['rss']['data']:>13.0f}"
                     f"{e['warm_up_s']:>11.1f}")
    lines.append("  peak MB: the worker's peak resident set (VmHWM) at the end; training MB: that less its peak "
                 "after import and loading the data")
    for peer, e in bow["peers"].items():
        if e.get("summary"):
            lines.append(f"  {BOW_LABELS.get(peer, peer)}: {e['summary']}")


def _latency_table(run, lines):
    lines.append("one-row latency (us per call on one test row, median of 5 rounds; probabilities out)")
    for name, lat in run["latency"].items():
        parts = []
        for key, secs in lat["seconds"].items():
            lab = (f"PyTorch eager inference_mode ({lat.get('torch') or '?'})" if key == "torch"
                   else LATENCY_LABELS.get(key, key))
            parts.append(f"{lab} {1e6 * statistics.median(secs):.1f}")
        lines.append(f"  {name} ({lat['calls']:,} calls a round): " + ", ".join(parts))


def _parallel_text(par):
    t1, t2 = (statistics.median(par[t]["seconds"]) for t in ("1", "2"))
    p1, p2 = par["1"]["products_s"], par["2"]["products_s"]
    steps = -(-par["rows"] // par["batch_size"])
    return (f"per {par['batch_size']}-row step: 1 thread {1e6 * t1 / steps:.0f} us (products {1e6 * p1 / steps:.0f}, "
            f"outside {1e6 * (t1 - p1) / steps:.0f}), 2 threads {1e6 * t2 / steps:.0f} us (products "
            f"{1e6 * p2 / steps:.0f}, outside {1e6 * (t2 - p2) / steps:.0f}); whole step {t1 / t2:.2f}x, products "
            f"{p1 / p2:.2f}x")


def tables(run, lines):
    if run.get("latency"):
        _latency_table(run, lines)
        lines.append("")
    if run.get("bow"):
        _bow_table(run["bow"], lines)
        lines.append("")
    par = run.get("parallel")
    if par and "skip" not in par:
        lines.append(f"parallel passes (fastnn, wide network, {par['rows']:,} rows, fresh worker per thread count): "
                     + _parallel_text(par))
        lines.append("")


def _bow_goals(bow):
    out = []
    fast = bow.get("peers", {}).get("bow_fastnn", {})
    for peer, target in pr.GOAL_BOW.items():
        goal = f"bag of words >= {target:g}x {pr.PEER_LABELS[peer]} samples/s, with a lower peak memory"
        key = _bow_key(bow, peer)
        other = bow.get("peers", {}).get(key, {}) if key else {}
        if "error" in bow:
            out.append((goal, "SKIP", bow["error"]))
        elif "samples_per_s" not in fast:
            out.append((goal, "SKIP", fast.get("error", "fastnn not measured")))
        elif "samples_per_s" not in other:
            out.append((goal, "SKIP", other.get("error", f"{pr.PEER_LABELS[peer]} not measured")))
        else:
            ratio = fast["samples_per_s"] / other["samples_per_s"]
            lower = fast["peak_mb"] < other["peak_mb"]
            text = (f"{ratio:.2f}x ({fast['samples_per_s']:,.0f} vs {other['samples_per_s']:,.0f} samples/s, "
                    f"{BOW_LABELS[key]}); peak memory {fast['peak_mb']:.0f} vs {other['peak_mb']:.0f} MB; "
                    f"test accuracy {fast['accuracy_median']:.4f} vs {other['accuracy_median']:.4f}")
            if not lower:
                text += "; why: fastnn's peak memory is not lower"
            out.append((goal, "PASS" if ratio >= target and lower else "FAIL", text))
    return out


def goals(run):
    """[(goal, status, text)] of the bag-of-words, latency and parallel-passes runs present in ``run``."""
    out = []
    if run.get("bow"):
        out += _bow_goals(run["bow"])
    for name, limit in pr.GOAL_LATENCY.items():
        lat = (run.get("latency") or {}).get(name)
        if lat is None:
            continue
        goal = (f"one-row latency ({name}): fastnn <= " + (f"{limit:g}x " if limit != 1 else "") + "ONNX Runtime's")
        med = {k: statistics.median(v) for k, v in lat["seconds"].items() if v}
        fastnn = [k for k in ("fastnn_predict", "fastnn_call") if k in med]
        if not fastnn or "onnxruntime" not in med:
            out.append((goal, "SKIP", ("ONNX Runtime" if fastnn else "fastnn") + " not measured"))
            continue
        best = min(fastnn, key=med.get)
        ratio = med[best] / med["onnxruntime"]
        out.append((goal, "PASS" if ratio <= limit else "FAIL",
                    f"{ratio:.2f}x ({LATENCY_LABELS[best]} {1e6 * med[best]:.1f} us, ONNX Runtime "
                    f"{1e6 * med['onnxruntime']:.1f} us)"))
    par = run.get("parallel")
    if par is not None:
        goal = (f"parallel passes: the wide step outside its products >= {pr.GOAL_PARALLEL_PASSES:g}x faster "
                "at 2 threads than at 1")
        if "skip" in par:
            out.append((goal, "SKIP", par["skip"]))
        else:
            o1, o2 = outside_products(par, 1), outside_products(par, 2)
            if o1 is None or o2 is None or o2 <= 0:  # noise: the step measured below its products alone
                out.append((goal, "SKIP", "not measurable, the step no longer than its products: "
                            + _parallel_text(par)))
            else:
                out.append((goal, "PASS" if o1 / o2 >= pr.GOAL_PARALLEL_PASSES else "FAIL",
                            f"{o1 / o2:.2f}x: " + _parallel_text(par)))
    return out
