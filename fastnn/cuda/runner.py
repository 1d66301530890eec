"""Replaying a training step's plan: launch by launch, or as captured CUDA graphs (``StepRunner``).

``network.train_step`` records a step's launches into a ``Plan`` once; ``StepRunner`` keeps the
plans of a model's steps and runs each as many times as there are batches, capturing it into a
CUDA graph of GRAPH_STEPS steps where the driver allows, so that a replay costs about a
microsecond per kernel instead of some 27 µs per launch from Python.
"""
import warnings

import numpy as np

from . import GRAPH_STEPS, USE_GRAPHS, Plan


class StepRunner:
    """Runs a step plan many times: launch by launch, or as replays of captured CUDA graphs.

    Graphs need a real GPU and the driver API of ``cuda.bindings`` (installed with numba-cuda);
    in the simulator, or with FASTNN_CUDA_GRAPHS=0, or if a capture fails, plans run launch
    by launch, which computes the same thing. The first run of a new plan is always plain: it
    compiles the kernels, which must not happen while a stream is being captured. A graph is
    kept per plan (its kernels, geometry, pointers and scalars, all of which it replays) and
    number of steps.
    """
    MAX_GRAPHS = 16
    MAX_PLANS = 16

    def __init__(self, stream, use_graphs=USE_GRAPHS):
        self.stream = stream
        self.driver = _graph_driver() if use_graphs else None
        self.warm = set()
        self.graphs = {}
        self.plans = {}

    def plan(self, inputs, build):
        """The plan ``build(plan)`` records for these exact ``inputs`` (arrays by identity, the
        rest by value), built once: building costs more host time than replaying a graph."""
        key = tuple(_plan_key(inputs))
        found = self.plans.get(key)
        if found is None:
            if len(self.plans) >= self.MAX_PLANS:
                self.plans.clear()
            plan = Plan(self.stream)
            build(plan)
            # The inputs are kept with the plan so that no id in the key can be reused by a new object.
            found = self.plans[key] = (plan, tuple(inputs))
        return found[0]

    @property
    def uses_graphs(self):
        return self.driver is not None

    def run(self, plan, times):
        if self.driver is None:
            for _ in range(times):
                plan.run()
            return
        key = plan.key()
        if key not in self.warm:
            plan.run()
            times -= 1
            self.warm.add(key)
        done = 0
        try:
            for steps, count in ((GRAPH_STEPS, times // GRAPH_STEPS), (1, times % GRAPH_STEPS)):
                if count:
                    graph = self._graph(plan, key, steps)
                    for _ in range(count):
                        _check(self.driver.cuGraphLaunch(graph, self._handle()))
                        done += steps
        except _GraphError as e:
            # Nothing runs while a stream is captured, and the device counters tell each step
            # where it is: the steps not yet done can run as plain launches.
            warnings.warn(f"CUDA graph capture failed ({e}); training continues with plain kernel launches",
                          RuntimeWarning, stacklevel=2)
            self.driver = None
            for _ in range(times - done):
                plan.run()

    def _handle(self):
        h = self.stream.handle
        return self.driver.CUstream(h.value if hasattr(h, "value") else int(h))

    def _graph(self, plan, key, steps):
        found = self.graphs.get((key, steps))
        if found is not None:
            return found[1]
        if len(self.graphs) >= self.MAX_GRAPHS:
            self.release()
        drv = self.driver
        try:
            h = self._handle()
            _check(drv.cuStreamBeginCapture(h, drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_GLOBAL))
        except Exception as e:
            raise _GraphError(str(e)) from e
        try:
            for _ in range(steps):
                plan.run()
        except Exception as e:
            drv.cuStreamEndCapture(h)
            raise _GraphError(str(e)) from e
        try:
            graph = _check(drv.cuStreamEndCapture(h))[0]
            exec_ = _check(drv.cuGraphInstantiate(graph, 0))[0]
        except RuntimeError as e:
            raise _GraphError(str(e)) from e
        self.graphs[(key, steps)] = (graph, exec_)
        return exec_

    def release(self):
        """Destroy the captured graphs (their device memory is the driver's)."""
        for graph, exec_ in self.graphs.values():
            self.driver.cuGraphExecDestroy(exec_)
            self.driver.cuGraphDestroy(graph)
        self.graphs.clear()

    def forget(self):
        """Drop every plan and graph: a plan keeps its arrays alive, which must not outlive the
        buffers the backend has replaced (a new data set, larger workspace, new parameters)."""
        self.plans.clear()
        self.warm.clear()
        if self.driver is not None:
            self.release()


def _plan_key(inputs):
    """The parts of a plan's key: host arrays by value, numbers as they are, bundles (tuples) by
    their fields, everything else (device arrays) by identity."""
    for a in inputs:
        if isinstance(a, tuple):
            yield from _plan_key(a)
        elif isinstance(a, np.ndarray):
            yield a.tobytes()
        elif isinstance(a, (int, float, np.generic)) or a is None:
            yield a
        else:
            yield id(a)


class _GraphError(RuntimeError):
    pass


def _graph_driver():
    """The CUDA driver API module for graph capture, or None where it cannot be used."""
    from numba import config
    if config.ENABLE_CUDASIM:
        return None
    try:
        from cuda.bindings import driver
    except ImportError:
        try:
            from cuda import cuda as driver  # cuda-python before 12.6
        except ImportError:
            return None
    return driver


def _check(result):
    """The values after the CUresult of a ``cuda.bindings.driver`` call; RuntimeError if it failed."""
    err = result[0] if isinstance(result, tuple) else result
    if int(err) != 0:
        raise RuntimeError(f"CUDA driver error {err}")
    return result[1:] if isinstance(result, tuple) else ()
