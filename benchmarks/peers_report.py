"""The text report of ``peers.py`` (header, tables, goals) and its plot, from the ``run`` dict
that ``peers.main`` fills. Only numpy and the standard library at module level (asv imports
this module as ``benchmarks.peers_report`` during discovery); matplotlib only inside plot().
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers_adapters import PEER_LABELS, flops_per_sample, torch_variant  # noqa: E402
from peers_worker import VALUES_HIDDEN  # noqa: E402

# --------------------------------------------------------------------------------------------
# The goals of the benchmark, stated once. Ratio = fastnn's samples/s / the peer's; "torch" is
# the fastest of the PyTorch eager Adam variants measured for that config.
# --------------------------------------------------------------------------------------------
GOAL_SEED = {"torch": 3.0, "jax": 2.0}    # 784-100-50-10, batch 50, at equal test accuracy
GOAL_WIDE = {"torch": 1.3, "jax": 1.1}    # 784-1024-1024-10, batch 256
GOAL_WIDE_STD = 1.0                       # the wide network on standardized MNIST (no zeros), every peer
GOAL_SWEEP_RATIO = 1.0                    # every sweep point, every peer measured there
GOAL_PREDICT_RATIO = 1.0                  # predict of the 10,000 test rows, every peer
GOAL_WARM_START_S = 1.0                   # new process -> first trained batch, warm Numba cache
GOAL_COLD_START_S = 15.0                  # the same, empty Numba cache
# fastnn's distance to the limit: the epoch's dense products alone (benchmarks/step_limit.py,
# same shapes, same BLAS and threads, same process) / the epoch's training time.
GOAL_LIMIT = {"seed": 0.75, "wide": 0.95}
GOAL_SKLEARN_API = 4.0                    # fastnn.sklearn.MLPClassifier vs scikit-learn's, equal accuracy
GOAL_BOW = {"sklearn": 5.0, "torch": 2.0}  # bag of words, samples/s; and a lower peak memory than each
# the wide step's time outside its dense products, at 1 thread / at 2 threads (fresh workers)
GOAL_PARALLEL_PASSES = 1.7
# one-row latency, fastnn / ONNX Runtime (the faster of fastnn's predict(row) and model(row))
GOAL_LATENCY = {"seed": 1.0, "wide": 1.2}
# "Equal accuracy": fastnn's median test accuracy at most this far below the peer's.
ACCURACY_TOLERANCE = 0.01
BUSY_LOAD = 1.5                           # other work's load average above which the machine counts as busy

# Shown by name only in the environments (see peers_worker).


def resolve(result, peer):
    """The peer key measured in ``result``: "torch" is the config's fastest PyTorch eager variant."""
    return result.get("torch_best") if peer == "torch" else peer


def entry(result, peer):
    key = resolve(result, peer)
    return result["peers"].get(key, {}) if key else {}


def rate(result, peer):
    return entry(result, peer).get("samples_per_s")


def label(peer, result=None):
    """The peer's name in the report; the config's fastest PyTorch variant is 'PyTorch eager (best: fused)'."""
    if peer == "torch" and result is not None:
        peer = result.get("torch_best") or "torch"
    variant = torch_variant(peer)
    if variant and result is not None and result.get("torch_best") == peer:
        return f"PyTorch eager (best: {variant})"
    return PEER_LABELS.get(peer, peer)


def _other_load(run):
    """The load average of other work: at the start, and at the end less the benchmark's own
    threads (one peer at a time keeps ``threads`` cores busy, which the average counts)."""
    return max(run["load_start"][0], run.get("load_end", (0.0,))[0] - run["threads"])


def _busy(run):
    return _other_load(run) > BUSY_LOAD


# --------------------------------------------------------------------------------------------
# Header: machine, peers, their BLAS and environments
# --------------------------------------------------------------------------------------------

def _environ_text(environ):
    return " ".join(k if v is None or k in VALUES_HIDDEN else f"{k}={v}" for k, v in environ.items()) or "(empty)"


def _changed_text(changed):
    if not changed:
        return "none"
    return ", ".join(f"{k}: {'unset' if a is None else repr(a)} -> {'unset' if b is None else repr(b)}"
                     for k, (a, b) in changed.items())


def header(run):
    cpu = run["cpu"]
    lines = [f"fastnn vs peers, Python {run['python']}, NumPy {run.get('numpy', '?')}, {run['threads']} threads "
             f"per peer; load average {run['load_start'][0]:.2f} at start, "
             f"{run.get('load_end', (float('nan'),))[0]:.2f} at end",
             f"CPU: {cpu['model']}; {cpu['logical']} logical CPUs, {cpu['cores'] or '?'} cores, "
             f"{cpu['usable']} usable by this process; SIMD: {' '.join(cpu['simd']) or 'none of the listed'}"
             + (f" (not: {' '.join(cpu['simd_missing'])})" if cpu["simd_missing"] else "")]
    gemm = run.get("gemm_start", {})
    if gemm.get("blas"):
        lines.append(f"NumPy's BLAS (clean GEMM-peak process): {gemm['blas']}")
    lines.append("Each peer runs in a process of its own, started with a clean environment: "
                 + ", ".join(run.get("clean_env_names", [])) + " from the caller (where set), and "
                 f"OMP_NUM_THREADS = MKL_NUM_THREADS = OPENBLAS_NUM_THREADS = {run['threads']}. Shown: each worker's "
                 "os.environ after import and set-up "
                 f"({', '.join(VALUES_HIDDEN)}: names only), and what import and set-up changed.")
    for p, w in run["peer_info"].items():
        info = w["info"]
        lines.append(f"  {PEER_LABELS.get(p, p)}: {info['summary']}")
        lines.append(f"      BLAS: {info['blas']}")
        lines.append(f"      environment: {_environ_text(w['environ'])}")
        lines.append(f"      changed by import and set-up: {_changed_text(w['env_changed'])}")
        if info.get("benchmarks_package_imported"):
            lines.append("      WARNING: the worker imported the benchmarks package")
    for p, why in run["skipped"].items():
        lines.append(f"  {PEER_LABELS.get(p, p)}: skipped ({why})")
    if _busy(run):
        lines.append("  WARNING: the machine was busy during this run; ratios are unreliable")
    lines.append(f"  medians of {run['repeats']} epoch(s) per peer and config (sweep: {run['sweep_repeats']}); "
                 "peers alternate")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def _config_table(result, peak, lines):
    sizes, batch = result["sizes"], result["batch_size"]
    fps = flops_per_sample(sizes)
    base = rate(result, "fastnn")
    data = ", standardized pixels (training rows' mean and std)" if result.get("data") == "std" else ""
    lines.append(f"{result['config']}: {'-'.join(map(str, sizes))}, batch {batch}, {result['rows']:,} rows/epoch, "
                 f"{fps / 1e6:.3f} MFLOP/sample{data}")
    products = result.get("products_s")
    lines.append(f"  {'peer':<30}{'samples/s':>12}{'min-max':>21}{'fastnn/peer':>13}{'test acc':>10}"
                 f"{'GFLOP/s':>10}{'% peak':>8}{'warm-up s':>11}" + (f"{'% limit':>9}" if products else ""))
    for peer, e in result["peers"].items():
        name = label(peer, result)
        if "samples_per_s" not in e:
            lines.append(f"  {name:<30}skipped: {e.get('error', 'no measurement')}")
            continue
        r = e["samples_per_s"]
        rates = [result["rows"] / s for s in e["seconds"]]
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        ratio = f"{base / r:.2f}x" if base else "-"
        gflops = r * fps / 1e9
        lines.append(f"  {name:<30}{r:>12,.0f}{spread:>21}{ratio:>13}{e['accuracy_median']:>10.4f}"
                     f"{gflops:>10.1f}{100 * gflops / peak:>7.1f}%{e['warm_up_s']:>11.1f}"
                     + (f"{100 * limit_fraction(result, peer):>8.0f}%" if products else ""))
    if products:
        lines.append(f"  % limit: the epoch's dense products alone ({products:.2f} s through fastnn's BLAS, "
                     f"{products / -(-result['rows'] // batch) * 1e6:.0f} us per {batch}-row step) "
                     "/ the peer's epoch time")


def limit_fraction(result, peer):
    """Products-alone time / the peer's epoch time (median), or None where either is missing."""
    r = rate(result, peer)
    if not r or not result.get("products_s"):
        return None
    return result["products_s"] / (result["rows"] / r)


def _predict_table(run, lines):
    lines.append("predict (10,000 test rows -> probabilities; rows/s, median; x = fastnn/peer)")
    for name, times in run["predict"].items():
        base = times.get("fastnn")
        parts = []
        for peer, secs in times.items():
            med = statistics.median(secs)
            ratio = f" ({statistics.median(secs) / statistics.median(base):.2f}x)" if base and peer != "fastnn" else ""
            parts.append(f"{PEER_LABELS.get(peer, peer)} {10000 / med:,.0f}{ratio}")
        products = (run.get("predict_products_s") or {}).get(name)
        if products:
            parts.append(f"fastnn's forward products alone {10000 / products:,.0f}")
        lines.append(f"  {name}: " + ", ".join(parts))


def _startup_table(startup, lines):
    lines.append("start-up (new process -> import -> build seed model -> first trained batch; wall s)")
    for key, lab in (("fastnn_cold", "fastnn, empty Numba cache"), ("fastnn_warm", "fastnn, warm Numba cache"),
                     ("torch", "PyTorch eager")):
        if key in startup:
            s = startup[key]
            lines.append(f"  {lab:<28}{s['first_batch_at_s']:>6.2f} s to the first batch, {s['wall_s']:.2f} s to "
                         f"exit  (import {s['import_s']:.2f} s, build + first batch {s['first_batch_s']:.2f} s)")
    for key in ("fastnn_error", "torch_error"):
        if key in startup:
            lines.append(f"  {key}: {startup[key]}")


def _memory_table(run, lines):
    lines.append(f"peak memory, information only (fresh process: import, load MNIST, train one "
                 f"{run['memory_rows']:,}-row epoch of the seed config; peak resident set, MB)")
    for peer, m in run["memory"].items():
        if "error" in m:
            lines.append(f"  {PEER_LABELS.get(peer, peer):<24}failed: {m['error']}")
        else:
            lines.append(f"  {PEER_LABELS.get(peer, peer):<24}{m['peak']:>8.0f} MB   (python+numpy "
                         f"{m['python']:.0f}, after import {m['import']:.0f}, after data {m['data']:.0f})")


def _sweep_peers(points):
    peers = []
    for p in ("fastnn", "torch", "torch_compile", "jax", "sklearn"):
        if any(rate(r, p) is not None or (p != "torch" and p in r["peers"]) for r in points):
            peers.append(p)
    return peers


def _sweep_table(run, peak, lines):
    lines.append("sweep (samples/s, median; ratio = fastnn/peer). PyTorch eager runs one Adam variant here: "
                 f"the batch sweep the seed config's fastest ({run.get('sweep_torch', {}).get('batch') or '-'}), "
                 f"the width sweep the wide config's ({run.get('sweep_torch', {}).get('width') or '-'})")
    for kind in ("batch", "width"):
        points = [r for r in run["sweep"] if r["kind"] == kind]
        if not points:
            continue
        title = ("batch size (784-100-50-10)" if kind == "batch"
                 else f"hidden width h (784-h-h-10, batch {points[0]['batch_size']})")
        peers = _sweep_peers(points)
        names = [f"PyTorch ({torch_variant(points[0].get('torch_best')) or '-'})" if p == "torch"
                 else PEER_LABELS[p] for p in peers]
        lines.append(f"  {title:<38}" + "".join(f"{n:>20}" for n in names) + f"{'fastnn GFLOP/s':>16}{'% peak':>8}{'% limit':>9}")
        for r in points:
            fps = flops_per_sample(r["sizes"])
            fast = rate(r, "fastnn")
            cells = []
            for p in peers:
                x = rate(r, p)
                if x is None:
                    cells.append(f"{'-':>20}")
                elif p == "fastnn":
                    cells.append(f"{x:>20,.0f}")
                else:
                    cells.append(f"{f'{x:,.0f} ({fast / x:.2f}x)' if fast else f'{x:,.0f}':>20}")
            gf = fast * fps / 1e9 if fast else 0.0
            lim = limit_fraction(r, "fastnn")
            lim_text = f"{100 * lim:>8.0f}%" if lim is not None else f"{'-':>9}"
            lines.append(f"  {r['value']:<38}" + "".join(cells) + f"{gf:>16.1f}{100 * gf / peak:>7.1f}%" + lim_text)
    lines.append("  % limit: fastnn's dense products alone / its epoch time, as in the configs above")


# --------------------------------------------------------------------------------------------
# Goals
# --------------------------------------------------------------------------------------------

def _why(result, peer, target, peak, small_peak):
    """Why fastnn/peer < target on one config. With fastnn's products-alone time measured: whether
    those products alone already take longer than the goal allows fastnn's whole step (then only
    faster products, or fewer, can meet it), else how much of the step lies outside them."""
    fast, other = rate(result, "fastnn"), rate(result, peer)
    fps = flops_per_sample(result["sizes"])
    fast_pct, other_pct = 100 * fast * fps / 1e9 / peak, 100 * other * fps / 1e9 / peak
    steps = -(-result["rows"] // result["batch_size"])
    if result.get("products_s"):
        allowed_us = result["rows"] / other / target / steps * 1e6
        products_us = result["products_s"] / steps * 1e6
        step_us = result["rows"] / fast / steps * 1e6
        if products_us > allowed_us:
            return (f"bound by the matrix products: fastnn's dense products alone take {products_us:.0f} us a step, "
                    f"more than the {allowed_us:.0f} us a step that {target:g}x {label(peer, result)} allows "
                    f"({label(peer, result)}'s whole step: {allowed_us * target:.0f} us)")
        return (f"fastnn's step takes {step_us:.0f} us, {step_us - products_us:.0f} us of it outside its dense "
                f"products ({products_us:.0f} us); {target:g}x {label(peer, result)} needs {allowed_us:.0f} us")
    bound = 100.0 / other_pct
    if bound < target:
        return (f"{label(peer, result)} already runs at {other_pct:.0f}% of the GEMM peak, so even fastnn at 100% "
                f"would be only {bound:.2f}x")
    if fast_pct > 60:
        return f"fastnn is GEMM-bound ({fast_pct:.0f}% of peak) and {label(peer, result)} is close behind"
    per_batch_us = 1e6 * result["batch_size"] / fast
    return (f"fastnn reaches only {fast_pct:.0f}% of the GEMM peak: {per_batch_us:.0f} us per batch of "
            f"{result['batch_size']}, so per-batch overhead or small-GEMM efficiency dominates "
            f"(NumPy alone: {small_peak:.0f} GFLOP/s at 50x784x100)")


def _ratio_goal(result, peer, target, peak, small_peak, accuracy=False):
    """(status, text) for fastnn/peer >= target on one config (and equal accuracy if asked)."""
    fast, other = rate(result, "fastnn"), rate(result, peer)
    if not fast:
        return "SKIP", "fastnn not measured"
    if not other:
        return "SKIP", f"{PEER_LABELS.get(peer, peer)} not measured"
    fps = flops_per_sample(result["sizes"])
    ratio = fast / other
    text = (f"{ratio:.2f}x (fastnn {fast:,.0f}/s = {100 * fast * fps / 1e9 / peak:.0f}% of GEMM peak, "
            f"{label(peer, result)} {other:,.0f}/s = {100 * other * fps / 1e9 / peak:.0f}%)")
    ok = ratio >= target
    if accuracy:
        acc_f, acc_o = entry(result, "fastnn").get("accuracy_median"), entry(result, peer).get("accuracy_median")
        acc_ok = acc_f is not None and acc_o is not None and acc_f >= acc_o - ACCURACY_TOLERANCE
        text += (f"; test accuracy fastnn {acc_f:.4f} vs {acc_o:.4f} (equal: at most "
                 f"{ACCURACY_TOLERANCE:.2f} below)" if acc_f is not None and acc_o is not None
                 else "; accuracy not measured")
        if not acc_ok:
            text += "; why: fastnn's test accuracy is lower"
        ok = ok and acc_ok
    if ratio < target:
        text += "; why: " + _why(result, peer, target, peak, small_peak)
    return ("PASS" if ok else "FAIL"), text


def _every_peer_goal(ratios, target):
    """(status, text) for {peer label: fastnn/peer ratio} all >= target."""
    if not ratios:
        return "SKIP", "no peer measured"
    text = ", ".join(f"{name} {r:.2f}x" for name, r in ratios.items())
    failing = [name for name, r in ratios.items() if r < target]
    if failing:
        return "FAIL", text + f"; below {target}x: {', '.join(failing)}"
    return "PASS", text


def sklearn_api_runs(run):
    """The estimator runs of ``run`` as a list of dicts (library, batch_size, learning_rate, epochs,
    seconds, accuracy); runs saved before the settings grid are read as they were."""
    api = run.get("sklearn_api")
    if not api:
        return []
    if "runs" in api:
        return api["runs"]
    runs = []
    for key, r in api.items():
        runs.append(dict(r, library="sklearn" if key == "sklearn" else "fastnn",
                         batch_size=str(r.get("batch_size", "auto")), learning_rate=r.get("learning_rate", 1e-3)))
    return runs


def _api_run(r):
    return (f"batch {r['batch_size']}, learning rate {r['learning_rate']:g}, {r['epochs']} epochs: "
            f"{r['seconds']:.2f} s, test accuracy {r['accuracy']:.4f}")


def goals(run, peak, small_peak):
    """[(goal, status, text)] for every goal that this run can check (SKIP where a peer is missing)."""
    out = []
    by_name = {r["config"]: r for r in run["configs"]}
    for config, targets, accuracy in (("seed", GOAL_SEED, True), ("wide", GOAL_WIDE, False)):
        if config not in by_name:
            continue
        r = by_name[config]
        for peer, target in targets.items():
            name = "PyTorch eager (best Adam variant)" if peer == "torch" else PEER_LABELS[peer]
            status, text = _ratio_goal(r, peer, target, peak, small_peak, accuracy=accuracy)
            out.append((f"{config} training >= {target}x {name}" + (" at equal accuracy" if accuracy else ""),
                        status, text))
    if "wide_std" in by_name:
        r = by_name["wide_std"]
        fast = rate(r, "fastnn")
        ratios = {label(p, r): fast / e["samples_per_s"] for p, e in r["peers"].items()
                  if fast and p != "fastnn" and e.get("samples_per_s")}
        status, text = _every_peer_goal(ratios, GOAL_WIDE_STD) if fast else ("SKIP", "fastnn not measured")
        out.append((f"wide_std (standardized MNIST) training >= {GOAL_WIDE_STD}x every peer", status, text))
    for config, target in GOAL_LIMIT.items():
        r = by_name.get(config)
        if r is None:
            continue
        goal = f"{config}: dense products alone >= {100 * target:.0f}% of fastnn's step time"
        fraction = limit_fraction(r, "fastnn")
        if fraction is None:
            out.append((goal, "SKIP", "products or fastnn not measured"))
            continue
        others = ", ".join(f"{label(p, r)} {100 * limit_fraction(r, p):.0f}%" for p in r["peers"]
                           if p != "fastnn" and limit_fraction(r, p) is not None)
        step_us = r["rows"] / rate(r, "fastnn") / -(-r["rows"] // r["batch_size"]) * 1e6
        products_us = r["products_s"] / -(-r["rows"] // r["batch_size"]) * 1e6
        out.append((goal, "PASS" if fraction >= target else "FAIL",
                    f"{100 * fraction:.0f}% (products {products_us:.0f} us of a {step_us:.0f} us step; the same "
                    f"products against the peers' steps: {others or 'none measured'})"))
    for r in run.get("sweep", []):
        fast = rate(r, "fastnn")
        if not fast:
            out.append((f"sweep {r['kind']} {r['value']}: >= {GOAL_SWEEP_RATIO}x every peer", "SKIP",
                        "fastnn not measured"))
            continue
        ratios = {label(p, r): fast / e["samples_per_s"] for p, e in r["peers"].items()
                  if p != "fastnn" and e.get("samples_per_s")}
        status, text = _every_peer_goal(ratios, GOAL_SWEEP_RATIO)
        if status == "FAIL":
            worst = min((p for p, e in r["peers"].items() if p != "fastnn" and e.get("samples_per_s")),
                        key=lambda p: fast / r["peers"][p]["samples_per_s"])
            text += "; why (worst): " + _why(r, worst, GOAL_SWEEP_RATIO, peak, small_peak)
        out.append((f"sweep {r['kind']} {r['value']}: >= {GOAL_SWEEP_RATIO}x every peer", status, text))
    for name, times in (run.get("predict") or {}).items():
        goal = f"predict 10,000 rows ({name}) >= {GOAL_PREDICT_RATIO}x every peer"
        if "fastnn" not in times:
            out.append((goal, "SKIP", "fastnn not measured"))
            continue
        base = statistics.median(times["fastnn"])
        ratios = {PEER_LABELS.get(p, p): statistics.median(t) / base for p, t in times.items() if p != "fastnn"}
        status, text = _every_peer_goal(ratios, GOAL_PREDICT_RATIO)
        products = (run.get("predict_products_s") or {}).get(name)
        if status == "FAIL" and products:
            fastest = min(statistics.median(t) for p, t in times.items() if p != "fastnn")
            text += (f"; fastnn's predict takes {1e3 * base:.1f} ms, its forward products alone "
                     f"{1e3 * products:.1f} ms ({100 * products / base:.0f}%), the fastest peer's whole predict "
                     f"{1e3 * fastest:.1f} ms" + (": bound by the matrix products" if products > fastest else ""))
        out.append((goal, status, text))
    runs = sklearn_api_runs(run)
    if runs:
        goal = f"fastnn.sklearn.MLPClassifier >= {GOAL_SKLEARN_API:g}x scikit-learn's MLPClassifier at equal accuracy"
        default = next((r for r in runs if r["library"] == "sklearn" and r["batch_size"] == "auto" and "seconds" in r),
                       None)
        if default is None:
            out.append((goal, "SKIP", "scikit-learn's defaults not measured"))
        else:
            target = default["accuracy"] - ACCURACY_TOLERANCE
            best = {}
            for lib in ("fastnn", "sklearn"):
                reached = [r for r in runs if r["library"] == lib and "seconds" in r and r["accuracy"] >= target]
                best[lib] = min(reached, key=lambda r: r["seconds"]) if reached else None
            if best["fastnn"] is None:
                out.append((goal, "FAIL", f"no fastnn run reached {target:.4f} (scikit-learn's defaults' accuracy "
                                          f"{default['accuracy']:.4f} less {ACCURACY_TOLERANCE:.2f})"))
            else:
                f, k = best["fastnn"], best["sklearn"]
                ratio = k["seconds"] / f["seconds"]
                same = [(r, o) for r in runs if r["library"] == "fastnn" and "seconds" in r
                        for o in runs if o["library"] == "sklearn" and "seconds" in o
                        and (o["batch_size"], o["learning_rate"], o["epochs"]) == (r["batch_size"], r["learning_rate"],
                                                                                 r["epochs"])]
                text = (f"{ratio:.2f}x: each library's fastest run reaching test accuracy {target:.4f} (scikit-learn's "
                        f"defaults' {default['accuracy']:.4f} less {ACCURACY_TOLERANCE:.2f}): fastnn {_api_run(f)}, "
                        f"scikit-learn {_api_run(k)}")
                if same:
                    text += "; with the same settings " + ", ".join(
                        f"{o['seconds'] / r['seconds']:.2f}x (batch {r['batch_size']}, {r['epochs']} epochs)"
                        for r, o in same)
                out.append((goal, "PASS" if ratio >= GOAL_SKLEARN_API else "FAIL", text))
    import peers_goals
    out += peers_goals.goals(run)
    startup = run.get("startup", {})
    if startup:
        for key, limit, lab in (("fastnn_warm", GOAL_WARM_START_S, "warm"), ("fastnn_cold", GOAL_COLD_START_S, "cold")):
            goal = f"start-up to the first trained batch, {lab} Numba cache <= {limit:g} s"
            if key in startup:
                s = startup[key]
                out.append((goal, "PASS" if s["first_batch_at_s"] <= limit else "FAIL",
                            f"{s['first_batch_at_s']:.2f} s (import {s['import_s']:.2f} s, build + first batch "
                            f"{s['first_batch_s']:.2f} s)"))
            elif key == "fastnn_cold" and "fastnn_error" not in startup:
                out.append((goal, "SKIP", "not measured (--quick; add --cold)"))
            else:
                out.append((goal, "SKIP", startup.get("fastnn_error", "not measured")))
    if _busy(run):
        load = _other_load(run)
        out = [(g, s, t + f" (machine busy: other load up to {load:.1f})" if s == "FAIL" else t)
               for g, s, t in out]
    return out


def report(run):
    """The whole report; also stores the goals in run["goals"]."""
    peak = max(run["gemm_start"]["2048^3"], run.get("gemm_end", {}).get("2048^3", 0.0))
    small_peak = max(run["gemm_start"]["50x784x100"], run.get("gemm_end", {}).get("50x784x100", 0.0))
    lines = [header(run), ""]
    lines.append(f"NumPy float32 GEMM peak, {run['threads']} threads: {peak:.1f} GFLOP/s at 2048^3, "
                 f"{small_peak:.1f} GFLOP/s at 50x784x100 (best of start and end of run)")
    lines.append("FLOPs/sample = 2*sum(in*out) forward + 2*sum(in*out) weight grads + 2*sum(in*out, layers 2..L) "
                 "input grads; GFLOP/s = samples/s * that; % peak = of the 2048^3 GEMM peak (information)")
    lines.append("")
    for result in run["configs"]:
        _config_table(result, peak, lines)
        lines.append("")
    if run.get("predict"):
        _predict_table(run, lines)
        lines.append("")
    runs = sklearn_api_runs(run)
    if runs:
        lines.append("scikit-learn estimator API (MLPClassifier(hidden_layer_sizes=(100, 50)), scikit-learn's defaults "
                     "otherwise, MNIST, float32; fit in a clean process each; the same settings for both libraries)")
        for r in runs:
            name = ("fastnn.sklearn.MLPClassifier" if r["library"] == "fastnn"
                    else "sklearn.neural_network.MLPClassifier")
            lines.append(f"  {name:<40}" + (_api_run(r) if "seconds" in r else f"failed: {r.get('error')}"))
        lines.append("")
    import peers_goals
    peers_goals.tables(run, lines)
    if run.get("startup"):
        _startup_table(run["startup"], lines)
        lines.append("")
    if run.get("memory"):
        _memory_table(run, lines)
        lines.append("")
    if run.get("sweep"):
        _sweep_table(run, peak, lines)
        lines.append("")
    lines.append("goals")
    checked = goals(run, peak, small_peak)
    for goal, status, text in checked:
        lines.append(f"  [{status}] {goal}: {text}")
    run["goals"] = [{"goal": g, "status": s, "detail": t} for g, s, t in checked]
    return "\n".join(lines)


def plot(run, path):
    """PNG of the sweep: samples/s against batch size and against hidden width, one line per peer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, kind in ((axes[0], "batch"), (axes[1], "width")):
        points = [r for r in run["sweep"] if r["kind"] == kind]
        if not points:
            ax.set_visible(False)
            continue
        for peer in ("fastnn", "torch", "torch_compile", "jax", "sklearn"):
            xs = [r["value"] for r in points if rate(r, peer)]
            ys = [rate(r, peer) for r in points if rate(r, peer)]
            if xs:
                name = (f"PyTorch eager, Adam {torch_variant(points[0].get('torch_best'))}" if peer == "torch"
                        else PEER_LABELS[peer])
                ax.plot(xs, ys, marker="o", label=name, linewidth=2.5 if peer == "fastnn" else 1.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([r["value"] for r in points])
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlabel("batch size (784-100-50-10)" if kind == "batch"
                      else f"hidden width h (784-h-h-10, batch {points[0]['batch_size']})")
        ax.set_ylabel("training samples/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    busy = " - machine busy, unreliable" if _busy(run) else ""
    fig.suptitle(f"MNIST training throughput, float32, Adam, {run['threads']} threads ({run['machine']}){busy}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

