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
import threading


class ModelLock:
    def __init__(self):
        self._mutex = threading.Lock()  # taken directly on the shared path: Condition's with costs more
        self._cond = threading.Condition(self._mutex)
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

    def acquire_shared(self):
        """Take a shared hold; returns what ``release_shared`` needs (whether this thread already
        held the lock exclusively, when there is nothing to take)."""
        mutex = self._mutex
        mutex.acquire()
        try:
            if self._owner is not None or self._waiting:
                if self._owner == threading.get_ident():  # inside this thread's exclusive hold: already safe
                    return True
                while self._owner is not None or self._waiting:
                    self._cond.wait()
            self._shared += 1
            return False
        finally:
            mutex.release()

    def release_shared(self, inside):
        if inside:
            return
        mutex = self._mutex
        mutex.acquire()
        try:
            self._shared -= 1
            if not self._shared and self._waiting:
                self._cond.notify_all()
        finally:
            mutex.release()

    def shared(self):
        """A context holding the lock shared: with any number of threads at once, never together
        with another thread's exclusive hold."""
        return _Shared(self)


class _Shared:
    # A class, not contextlib.contextmanager: a generator costs a microsecond or two a call, as much
    # as a one-row predict's own pass.
    __slots__ = ("lock", "inside")

    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        self.inside = self.lock.acquire_shared()

    def __exit__(self, *exc):
        self.lock.release_shared(self.inside)
