"""A model's lock: exclusive for what writes its buffers, shared for predicts that only read them.

Every model holds one ``ModelLock``. ``with lock:`` is exclusive and reentrant, as the
``threading.RLock`` it replaces (fit, train_on_batch, building, set_weights, a move to another
device, a training-mode call). ``with lock.shared():`` lets any number of threads in at once,
while no thread holds it exclusively: inference-mode ``predict``, whose compiled pass releases
the GIL and runs on a workspace of its own, so that predicts from several threads run at the
same time instead of in turn. A thread that holds the lock exclusively may take it shared too
(a callback that predicts during fit). A thread waiting for the exclusive lock is served before
new shared holders, so a stream of predicts cannot keep fit from starting.
"""
import contextlib
import threading


class ModelLock:
    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._owner = None      # thread id holding it exclusively
        self._depth = 0         # its reentrant acquisitions
        self._shared = 0        # shared holders
        self._waiting = 0       # threads waiting for the exclusive lock

    def acquire(self):
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            self._waiting += 1
            try:
                while self._owner is not None or self._shared:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._owner, self._depth = me, 1
            return True

    def release(self):
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a model lock that this thread does not hold")
            self._depth -= 1
            if not self._depth:
                self._owner = None
                self._cond.notify_all()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    @contextlib.contextmanager
    def shared(self):
        """Held by any number of threads at once, never together with another thread's exclusive hold."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:  # inside this thread's exclusive hold: already safe
                inside = True
            else:
                inside = False
                while self._owner is not None or self._waiting:
                    self._cond.wait()
                self._shared += 1
        try:
            yield
        finally:
            if not inside:
                with self._cond:
                    self._shared -= 1
                    if not self._shared:
                        self._cond.notify_all()
