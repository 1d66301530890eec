"""Regression check: benchmark two commits with asv and fail when any figure got worse by more
than a factor.

    python benchmarks/regression_check.py                     # HEAD against main, factor 1.25
    python benchmarks/regression_check.py --base v0.1 --head my-branch --factor 1.5 -b bench_dense

Both commits are built into asv's own environment (``.asv/env``) and run by one ``asv run``, so
they are measured back to back on the same machine; results land in ``.asv/results`` like any
other run (``asv publish`` shows them). Only committed code is measured. Exit status: 0 when no
figure regressed, 1 when one did (or a benchmark that passed on the base fails on the head),
2 when asv could not run.

Why not ``asv continuous --factor`` alone: asv ranks every figure lower-is-better, so it would
report a rise in training samples/s or in MNIST accuracy as a regression and their fall as an
improvement. Here a figure whose unit is in ``HIGHER_IS_BETTER`` is compared the other way round.
For time and memory the test is asv's own (``asv compare``): worse by more than the factor, and,
where both sides have several samples, with confidence intervals that do not overlap.

This file sits in the benchmark folder but holds no benchmark; asv imports it when it discovers
the suite, so it imports asv only when run.
"""
import argparse
import math
import os
import re
import subprocess
import sys
import tempfile

# Units (as the benchmarks declare them) of figures where a larger value is better.
HIGHER_IS_BETTER = {"samples/s", "accuracy", "% products", "speed-up"}

DEFAULT_FACTOR = 1.25


def _git(*args):
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def _asv(*args):
    """Run ``python -m asv ARGS`` with its output shown; returns the exit status."""
    command = [sys.executable, "-m", "asv", *args]
    print("+", " ".join(command), flush=True)
    return subprocess.run(command).returncode


def _results(conf, machine, commit, patterns):
    """{(benchmark name with parameters, environment): (value, stats, unit, version)} for one
    commit, for the benchmarks whose name matches one of ``patterns`` (all when empty)."""
    from asv.benchmarks import Benchmarks
    from asv.commands.compare import unroll_result
    from asv.results import iter_results_for_machine_and_hash

    benchmarks = Benchmarks.load(conf)
    figures = {}
    for result in iter_results_for_machine_and_hash(conf.results_dir, machine, commit):
        for key in result.get_all_result_keys():
            if key not in benchmarks or (patterns and not any(re.search(p, key) for p in patterns)):
                continue
            params = result.get_result_params(key)
            unit = benchmarks[key].get("unit")
            values = result.get_result_value(key, params)
            stats = result.get_result_stats(key, params)
            samples = result.get_result_samples(key, params)
            version = result.benchmark_version.get(key)
            for name, value, stat, sample in unroll_result(key, params, values, stats, samples):
                figures[(name, result.env_name)] = (value, (stat, sample), unit, version)
    return figures


def _show(value, unit):
    """A figure as asv prints it for seconds and bytes; four significant digits otherwise."""
    from asv.util import human_value
    if unit in ("seconds", "bytes"):
        return human_value(value, unit)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def compare(conf, machine, base, head, factor, patterns=()):
    """Print one line per figure that changed by more than ``factor`` between the environments
    that hold results for both commits; returns the number of regressions."""
    from asv.commands.compare import _is_result_better

    before, after = _results(conf, machine, base, patterns), _results(conf, machine, head, patterns)
    envs = sorted({env for _, env in before} & {env for _, env in after})
    if not envs:
        raise SystemExit(f"regression_check: no environment on machine {machine!r} holds results for both "
                         f"{base[:8]} and {head[:8]}")
    regressions = improvements = 0
    rows, broken = [], []
    for key in sorted(set(before) & set(after)):  # a figure measured on one side only compares with nothing
        name, env = key
        (b, b_stats, unit, b_version), (h, h_stats, _, h_version) = before[key], after[key]
        if b_version is not None and h_version is not None and b_version != h_version:
            continue  # measured by different versions of the benchmark: not comparable
        if b is None and h is None:
            broken.append(name)
            continue
        if not _missing(b) and h is None:
            rows.append(("failed", _show(b, unit), "failed", "", name, env))
            regressions += 1
            continue
        if _missing(b) or _missing(h):
            continue  # skipped on one side (no data, no GPU) or new: nothing to compare
        if unit in HIGHER_IS_BETTER:
            # 1/x turns "larger is better" into asv's "smaller is better"; track_ figures have one sample.
            b_cmp, h_cmp, b_ss, h_ss = 1.0 / b, 1.0 / h, None, None
        else:
            b_cmp, h_cmp, b_ss, h_ss = b, h, b_stats, h_stats
        ratio = h_cmp / b_cmp if b_cmp else math.inf
        if _is_result_better(b_cmp, h_cmp, b_ss, h_ss, factor):
            rows.append(("WORSE", _show(b, unit), _show(h, unit), f"{ratio:.2f}", name, env))
            regressions += 1
        elif _is_result_better(h_cmp, b_cmp, h_ss, b_ss, factor):
            rows.append(("better", _show(b, unit), _show(h, unit), f"{ratio:.2f}", name, env))
            improvements += 1
    print(f"\n{base[:8]} (base) -> {head[:8]} (head), factor {factor}; 'worse by' > 1 means the head "
          f"is slower, bigger or learns worse. Environments: {', '.join(envs)}")
    if rows:
        print(f"{'change':<7} {'base':>12} {'head':>12} {'worse by':>8}  benchmark")
        for change, b, h, ratio, name, env in rows:
            suffix = f"  [{env}]" if len(envs) > 1 else ""
            print(f"{change:<7} {b:>12} {h:>12} {ratio:>8}  {name}{suffix}")
    if broken:
        print(f"\nfailing on both commits (not counted): {', '.join(sorted(set(broken)))}")
    print(f"\n{regressions} regression(s), {improvements} improvement(s) beyond a factor of {factor}.")
    return regressions


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="main", help="the reference commit or branch (default: main)")
    parser.add_argument("--head", default="HEAD", help="the commit or branch under test (default: HEAD)")
    parser.add_argument("--factor", type=float, default=DEFAULT_FACTOR,
                        help=f"how much worse a figure may get before it fails the check (default: {DEFAULT_FACTOR})")
    parser.add_argument("-b", "--bench", action="append", default=[],
                        help="only benchmarks matching this regular expression (repeatable)")
    parser.add_argument("--quick", action="store_true",
                        help="one sample per benchmark: fast, but only large regressions stand out")
    parser.add_argument("--machine", help="asv machine name (default: this host's)")
    parser.add_argument("--no-run", action="store_true", help="compare the results already in .asv/results")
    args = parser.parse_args(argv)
    if args.factor <= 1.0:
        parser.error(f"--factor must be greater than 1, got {args.factor}")

    os.chdir(_git("rev-parse", "--show-toplevel"))
    base, head = _git("rev-parse", "--verify", args.base + "^{commit}"), _git("rev-parse", "--verify",
                                                                             args.head + "^{commit}")
    from asv.config import Config
    from asv.machine import Machine, MachineCollection

    conf = Config.load("asv.conf.json")
    machine = args.machine or Machine.get_unique_machine_name()
    if not os.path.exists(MachineCollection.get_machine_file_path()):
        if _asv("machine", "--yes") != 0:
            return 2
    if not args.no_run:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as hashes:
            hashes.write(f"{base}\n{head}\n")
        try:
            status = _asv("run", "--show-stderr", *(["--quick"] if args.quick else []),
                          *(["--machine", args.machine] if args.machine else []),
                          *[a for b in args.bench for a in ("--bench", b)], f"HASHFILE:{hashes.name}")
        finally:
            os.unlink(hashes.name)
        # 2: some benchmarks failed, which the comparison reports; anything else: asv did not run.
        if status not in (0, 2):
            return 2
    return 1 if compare(conf, machine, base, head, args.factor, args.bench) else 0


if __name__ == "__main__":
    sys.exit(main())
