"""A worker process of ``peers.py``: one framework per process, with an environment of its own.

The parent (:class:`Worker`) starts this file as a script, by its path,

    python benchmarks/peers_worker.py --peer NAME --fd N --threads T --data DIR [--options JSON]

with ``subprocess.Popen(env=...)``: the environment is exactly the one the parent chose (no
``multiprocessing`` spawn, so nothing of the parent's own environment or imports reaches the
peer, and the ``benchmarks`` package, whose ``__init__`` sets ``NUMBA_CACHE_DIR``, is never
imported here: the siblings are imported as top-level modules from this file's folder).

The two talk over one end of a ``multiprocessing.Pipe()`` (a Unix socket), handed down as an
inherited file descriptor (``pass_fds``) and rebuilt here as a ``multiprocessing.connection.
Connection``. Protocol: the worker imports its framework, loads the data (``.npy`` files) and
sends ``("ok", {"info", "rss", "environ", "env_changed"})`` or ``("error", traceback)``; then
it answers each ``(method, kwargs)`` with ``("ok", result)`` or ``("error", traceback)``, and
exits on ``None``.
"""
import os
import sys

# The environment as the parent handed it over, before anything is imported.
_ENV_AT_START = dict(os.environ)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import json  # noqa: E402
import subprocess  # noqa: E402
import traceback  # noqa: E402


_CALL_TIMEOUT_S = 1800
_CLOSE_TIMEOUT_S = 10
# Reported by name only: their values (paths, names) say nothing about the measurement.
VALUES_HIDDEN = ("PATH", "HOME", "USER", "LOGNAME", "TERM", "VIRTUAL_ENV", "PYTHONPATH", "TMPDIR")


class PeerFailed(RuntimeError):
    pass


def short_error(exc):
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------

class Worker:
    """One peer in a process of its own, started with exactly ``env`` as its environment."""

    def __init__(self, peer, threads, data_dir, env, options=None, timeout=_CALL_TIMEOUT_S):
        import multiprocessing
        self.peer = peer
        self.timeout = timeout
        self.conn, child = multiprocessing.Pipe()  # duplex: a socketpair on Unix
        try:
            out = sys.stderr.fileno()  # the worker's prints go to stderr, not into the report
        except (AttributeError, OSError, ValueError):
            out = None
        try:
            self.process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--peer", peer, "--fd", str(child.fileno()),
                 "--threads", str(threads), "--data", data_dir, "--options", json.dumps(options or {})],
                env=env, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                stdout=out, close_fds=True)
        finally:
            child.close()
        try:
            started = self._receive(timeout)
        except BaseException:
            self.close()
            raise
        self.info, self.rss = started["info"], started["rss"]
        self.environ, self.env_changed = started["environ"], started["env_changed"]

    def call(self, method, **kwargs):
        try:
            self.conn.send((method, kwargs))
        except (BrokenPipeError, OSError):
            raise PeerFailed(f"{self.peer}: worker process died (exit code {self.process.poll()})") from None
        return self._receive(self.timeout)

    def _receive(self, timeout):
        try:
            ready = self.conn.poll(timeout)
        except (EOFError, OSError):
            ready = True
        if not ready:
            self.process.kill()
            raise PeerFailed(f"{self.peer}: no answer within {timeout} s")
        try:
            status, payload = self.conn.recv()
        except (EOFError, OSError):
            try:
                code = self.process.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            raise PeerFailed(f"{self.peer}: worker process died (exit code {code})") from None
        if status == "error":
            raise PeerFailed(payload)
        return payload

    def close(self):
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        try:
            self.process.wait(_CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------

def _environ_report():
    """(environ, changed): the environment now, values of VALUES_HIDDEN replaced by None, and
    every variable that differs from the one this process started with: name -> [before, after]
    (None where unset)."""
    now = dict(os.environ)
    environ = {k: (None if k in VALUES_HIDDEN else v) for k, v in sorted(now.items())}
    changed = {k: [_ENV_AT_START.get(k), now.get(k)] for k in sorted(set(now) | set(_ENV_AT_START))
               if now.get(k) != _ENV_AT_START.get(k)}
    return environ, changed


def serve(conn, peer, threads, data_dir, options):
    """Import one framework, load the data, answer (method, kwargs) calls until None."""
    import peers_adapters
    try:
        import peers_latency
        import peers_onnx
        import peers_sparse
        classes = dict(peers_adapters.PEER_CLASSES, **peers_sparse.PEER_CLASSES, **peers_onnx.PEER_CLASSES,
                       **peers_latency.PEER_CLASSES)
        rss = {"python": peers_adapters.maxrss_mb()}
        impl = classes[peer](threads, options)
        rss["import"] = peers_adapters.maxrss_mb()
        impl.load_data(data_dir)
        rss["data"] = peers_adapters.maxrss_mb()
        info = impl.info()
        environ, changed = _environ_report()
        info["benchmarks_package_imported"] = "benchmarks" in sys.modules
        conn.send(("ok", {"info": info, "rss": rss, "environ": environ, "env_changed": changed}))
    except BaseException:  # reported to the parent, which skips this peer
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            return
        if message is None:
            return
        method, kwargs = message
        try:
            conn.send(("ok", getattr(impl, method)(**kwargs)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


def main(argv=None):
    import argparse
    from multiprocessing.connection import Connection
    parser = argparse.ArgumentParser(description="a peers.py worker (started by peers.py, not by hand)")
    parser.add_argument("--peer", required=True)
    parser.add_argument("--fd", type=int, required=True, help="this end of the parent's Pipe()")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--data", required=True, help="folder of the data files (.npy) that the peer's load_data reads")
    parser.add_argument("--options", default="{}", help="JSON object passed to the peer")
    args = parser.parse_args(argv)
    # Fewer threads than CPUs: pin this worker to that many, before its framework starts a pool
    # (JAX sizes its CPU thread pool by the CPUs it may use and has no thread-count setting).
    if hasattr(os, "sched_getaffinity"):
        usable = sorted(os.sched_getaffinity(0))
        if args.threads < len(usable):
            os.sched_setaffinity(0, usable[:args.threads])
    conn = Connection(args.fd)
    try:
        serve(conn, args.peer, args.threads, args.data, json.loads(args.options))
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
