"""A trained network inside your own Numba code: a learned surrogate of an ODE's right-hand side,
integrated by explicit steps a million times without leaving compiled code.

    python examples/surrogate_in_numba.py [--steps 1000000] [--quick]

The system is a damped pendulum, state (angle, angular velocity):

    d(angle)/dt = velocity,   d(velocity)/dt = -sin(angle) - 0.1 velocity

A network learns the right-hand side from 20,000 random states. ``model.predictor()`` then gives
an object that ``@numba.njit`` code takes as an argument and calls as ``p.predict(x, out)``: no
Python, no allocation per step. The same integration is timed three ways (per step):

1. the predictor inside an ``@njit`` loop;
2. a Python loop calling ``model.predict`` on each state;
3. a Python loop calling ONNX Runtime on the model exported by ``model.to_onnx`` (if installed).

and the surrogate's trajectory is compared with the true system's. The predictor is a snapshot:
it keeps the weights it was made with, whatever the model does afterwards.
"""
import argparse
import math
import os
import tempfile
import time

import numba
import numpy as np

import fastnn
from fastnn import MLP, Adam, Dense

DT = np.float32(0.01)


@numba.njit
def true_rhs(state, out):
    out[0, 0] = state[0, 1]
    out[0, 1] = -math.sin(state[0, 0]) - np.float32(0.1) * state[0, 1]


@numba.njit
def integrate_true(state0, steps):
    state = state0.copy()
    d = np.empty_like(state)
    for _ in range(steps):
        true_rhs(state, d)
        state[0, 0] += DT * d[0, 0]
        state[0, 1] += DT * d[0, 1]
    return state


@numba.njit
def integrate_surrogate(p, state0, steps):
    """Explicit Euler steps with the network as the right-hand side: one predict per step."""
    state = state0.copy()
    d = np.empty((1, p.n_out), state.dtype)
    for _ in range(steps):
        p.predict(state, d)
        state[0, 0] += DT * d[0, 0]
        state[0, 1] += DT * d[0, 1]
    return state


def integrate_python(predict, state0, steps):
    state = state0.copy()
    for _ in range(steps):
        d = predict(state)
        state[0, 0] += DT * d[0, 0]
        state[0, 1] += DT * d[0, 1]
    return state


def train(rows, epochs):
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.uniform(-math.pi, math.pi, rows), rng.uniform(-3, 3, rows)]).astype(np.float32)
    y = np.column_stack([x[:, 1], -np.sin(x[:, 0]) - 0.1 * x[:, 1]]).astype(np.float32)
    model = MLP([Dense(2, 64, activation="tanh"), Dense(64, 64, activation="tanh"),
                 Dense(64, 2, activation="linear")], seed=0)
    model.compile(loss="mse", optimizer=Adam(3e-3))
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model, model.evaluate(x[:2000], y[:2000])


def per_step(run, steps, repeats=3):
    """Median seconds per step of ``run(steps)`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps)
        times.append((time.perf_counter() - start) / steps)
    return float(np.median(times))


def onnx_runner(model):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = model.to_onnx(os.path.join(tempfile.mkdtemp(), "surrogate.onnx"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda state: session.run(["y"], {"x": state})[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000, help="explicit steps of the compiled loop")
    parser.add_argument("--quick", action="store_true", help="small data and few steps (a smoke test)")
    args = parser.parse_args(argv)
    steps = 2_000 if args.quick else args.steps
    python_steps = min(steps, 500 if args.quick else 20_000)  # Python loops take microseconds a step

    model, mse = train(2_000 if args.quick else 20_000, 3 if args.quick else 30)
    print(f"surrogate 2-64-64-2 trained: mse {mse:.2e} on its training states")
    p = model.predictor()
    state0 = np.array([[1.0, 0.0]], np.float32)

    integrate_surrogate(p, state0, 1)  # compile (or load from Numba's cache) before timing
    integrate_true(state0, 1)
    for n in sorted({min(steps, 300), steps}):  # 3 time units in (still swinging), and at the end
        end, truth = integrate_surrogate(p, state0, n), integrate_true(state0, n)
        print(f"after {n:,} steps of dt={float(DT):g}: surrogate {end[0].round(4)}, true system {truth[0].round(4)}")

    rows = [("predictor inside @njit", per_step(lambda n: integrate_surrogate(p, state0, n), steps))]
    rows.append(("model.predict from Python", per_step(lambda n: integrate_python(model.predict, state0, n),
                                                         python_steps)))
    ort_predict = onnx_runner(model)
    if ort_predict is not None:
        rows.append(("ONNX Runtime from Python", per_step(lambda n: integrate_python(ort_predict, state0, n),
                                                        python_steps)))
    else:
        print("(onnxruntime is not installed: its row is left out)")
    print(f"\nseconds per step (median of 3; {steps:,} compiled steps, {python_steps:,} Python steps):")
    fastest = rows[0][1]
    for name, seconds in rows:
        print(f"  {name:28s} {seconds * 1e6:8.2f} us  ({seconds / fastest:5.1f}x the compiled loop)")
    print(f"  {steps:,} steps compiled: {rows[0][1] * steps:.2f} s; through model.predict they would take "
          f"{rows[1][1] * steps:.1f} s")


if __name__ == "__main__":
    main()
