"""The benchmark scripts' command lines (benchmarks/peers.py), run in a child process: the
scripts put their folder first on sys.path, which the test process must not inherit."""
import subprocess
import sys
from pathlib import Path

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
