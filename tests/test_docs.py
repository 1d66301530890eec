"""What the README and docs state, checked against what the code does: each statement here was
wrong or missing once. The reference is the behaviour itself, run next to the sentence."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from fastnn import MLP, BatchNorm, Dense, Dropout

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def one_line(text):
    """``text`` with its line breaks and runs of spaces made single spaces."""
    return re.sub(r"\s+", " ", text)


def test_a_training_mode_call_updates_batchnorms_statistics_and_trains_no_weight_as_documented():
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    model = MLP([Dense(3, 4, activation="relu"), BatchNorm(), Dropout(0.5), Dense(4, 2, activation="softmax")],
                seed=0).compile("cross_entropy", "adam")
    before = model.get_weights()
    model(x, training=True)
    after = model.get_weights()
    moved = [not np.array_equal(a, b) for a, b in zip(before, after)]
    # Dense (W, b), BatchNorm (gamma, beta, running mean, running variance), Dense (W, b)
    assert moved == [False, False, False, False, True, True, False, False]
    readme = one_line(README)
    assert ("`training=True` is the training-mode forward pass over all rows at once: Dropout draws new masks, "
            "and BatchNorm normalizes with the batch and updates its running statistics") in readme
    assert "no weight is trained" in readme
    doc = one_line(MLP.__call__.__doc__)
    assert "updates its running statistics" in doc and "No weight is trained" in doc
    assert "Nothing is learned" not in doc


def test_the_readme_says_user_layers_run_without_bounds_checks_and_how_to_turn_them_on():
    readme = one_line(README)
    assert "They run compiled without bounds checks" in readme
    assert "`NUMBA_BOUNDSCHECK=1` in the environment makes every compiled function check (an IndexError" in readme
    # What the sentence promises: with the variable set, a user function indexing past its row
    # is an IndexError (here from the shape probe when the layer is added), not a crash.
    code = textwrap.dedent("""
        import numpy as np
        from fastnn import MLP, Dense, Lambda
        def shifted(x):
            out = np.empty_like(x)
            for i in range(x.shape[0]):
                for j in range(x.shape[1]):
                    out[i, j] = x[i, j + 1]
            return out
        try:
            MLP([Dense(3, 4), Lambda(shifted, lambda x, y, dy: dy)])
        except IndexError as e:
            print("IndexError", e)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "NUMBA_BOUNDSCHECK": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("IndexError"), done.stdout + done.stderr
