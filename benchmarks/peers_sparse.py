"""The bag-of-words benchmark of ``peers.py``: its data, and one peer class per framework on
that data (run in ``peers_worker.py`` worker processes as the peers ``bow_*``).

Data (``make_bow``, deterministic): rows of token counts over a 50,000-word vocabulary whose
word frequencies follow Zipf's law (probability of the word of rank k proportional to
k^-1.1; which id has which rank is a fixed random permutation), 160 tokens drawn per row, so
about 100 distinct words (nonzeros) a row; each value is log(1 + count), rows scaled to unit
length (float32 CSR). Labels: 20 classes from a sparse linear teacher (Gaussian weights on
half of the 5,000 most frequent words, zero elsewhere; each class's score standardized over
the training rows, so the classes are about equally frequent; label = the top score).
Training rows come first, then the test rows.

Network: 50000-256-20, ReLU, softmax + cross-entropy, Adam(1e-3), batch 256, every peer
starting from the same Glorot-uniform weights (``bow_weights``). Peers: fastnn's ``fit`` on the
CSR matrix; PyTorch eager with ``torch.sparse.mm`` (a CSR tensor built per batch from the
batch's CSR rows) for the first layer, fused or foreach Adam (two peers; the report takes the
faster); scikit-learn's ``MLPClassifier.partial_fit`` on the CSR matrix.

Only numpy and the standard library at module level (asv imports this module while it
discovers the suite); scipy and the frameworks inside the peers and ``make_bow``.
"""
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers_adapters import Peer  # noqa: E402

BOW_FEATURES = 50_000
BOW_HIDDEN = 256
BOW_CLASSES = 20
BOW_SIZES = (BOW_FEATURES, BOW_HIDDEN, BOW_CLASSES)
BOW_BATCH = 256
BOW_TOKENS = 160        # tokens drawn per row: about 100 distinct words
BOW_ZIPF = 1.1
BOW_TEACHER_WORDS = 5000
BOW_FILES = ("bow_data", "bow_indices", "bow_indptr", "bow_y")
BOW_PEERS = ("bow_fastnn", "bow_torch_fused", "bow_torch_foreach", "bow_sklearn")
BOW_PEER_MODULES = {"bow_fastnn": "fastnn", "bow_torch_fused": "torch", "bow_torch_foreach": "torch",
                    "bow_sklearn": "sklearn"}
BOW_TORCH_PEERS = ("bow_torch_fused", "bow_torch_foreach")
UNSUPPORTED = "fastnn does not take scipy.sparse input here"


def make_bow(train_rows, test_rows, seed=0):
    """(CSR matrix of train_rows + test_rows rows, float32; int64 labels), as the module says."""
    import scipy.sparse as sp
    rows = train_rows + test_rows
    rng = np.random.default_rng(seed)
    p = np.arange(1, BOW_FEATURES + 1, dtype=np.float64) ** -BOW_ZIPF
    p /= p.sum()
    ids = rng.permutation(BOW_FEATURES)  # the id of the word of each frequency rank
    parts = []
    for lo in range(0, rows, 10_000):  # in slices: the tokens of all rows at once are ~130 MB
        n = min(10_000, rows - lo)
        tokens = ids[rng.choice(BOW_FEATURES, size=(n, BOW_TOKENS), p=p)]
        key, counts = np.unique((np.arange(n, dtype=np.int64)[:, None] * BOW_FEATURES + tokens).ravel(),
                                return_counts=True)
        row, col = np.divmod(key, BOW_FEATURES)
        values = np.log1p(counts).astype(np.float32)
        norms = np.sqrt(np.bincount(row, weights=values.astype(np.float64) ** 2, minlength=n))
        values /= norms[row].astype(np.float32)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n))])
        parts.append(sp.csr_matrix((values, col.astype(np.int32), indptr), shape=(n, BOW_FEATURES)))
    x = sp.vstack(parts, format="csr").astype(np.float32)
    teacher = np.zeros((BOW_FEATURES, BOW_CLASSES), np.float32)
    common = ids[:BOW_TEACHER_WORDS]
    teacher[common] = rng.standard_normal((BOW_TEACHER_WORDS, BOW_CLASSES)) * (rng.random((BOW_TEACHER_WORDS, 1)) < 0.5)
    scores = np.asarray(x @ teacher)
    scores = (scores - scores[:train_rows].mean(axis=0)) / scores[:train_rows].std(axis=0)
    return x, scores.argmax(axis=1).astype(np.int64)


def save_bow(data_dir, train_rows, test_rows):
    """make_bow's arrays as bow_data.npy, bow_indices.npy, bow_indptr.npy, bow_y.npy; returns
    {"rows", "train_rows", "test_rows", "nnz_per_row", "class_counts"}."""
    x, y = make_bow(train_rows, test_rows)
    for name, array in zip(BOW_FILES, (x.data, x.indices, x.indptr, y)):
        np.save(os.path.join(data_dir, name + ".npy"), array)
    return {"rows": int(x.shape[0]), "train_rows": train_rows, "test_rows": test_rows,
            "nnz_per_row": x.nnz / x.shape[0], "class_counts": np.bincount(y[:train_rows]).tolist()}


def fastnn_bow_model(fastnn, weights):
    """The network in fastnn (the ``fastnn`` module passed in: only numpy at this module's level),
    from ``weights`` (``bow_weights``), compiled (``reset_fastnn_bow_model``)."""
    model = fastnn.MLP([fastnn.Dense(BOW_FEATURES, BOW_HIDDEN, activation="relu"),
                        fastnn.Dense(BOW_HIDDEN, BOW_CLASSES, activation="softmax")], seed=0)
    reset_fastnn_bow_model(model, fastnn, weights)
    return model


def reset_fastnn_bow_model(model, fastnn, weights):
    """Compile ``model`` afresh (Adam 1e-3 from zero moments, cross-entropy, accuracy) with
    ``weights`` as its parameters."""
    model.compile(loss="cross_entropy", optimizer=fastnn.Adam(1e-3), metrics=["accuracy"])
    for layer, w, b in zip(model.layers, weights[0::2], weights[1::2]):
        layer.set_weights([w, b])


def bow_weights(seed=0):
    """[W1, b1, W2, b2]: Glorot-uniform float32 (drawn in float32: a float64 draw of W1 would
    add 100 MB to every peer's peak memory), zero biases; the same in every process."""
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(BOW_SIZES[:-1], BOW_SIZES[1:]):
        limit = np.float32(np.sqrt(6.0 / (fan_in + fan_out)))
        w = rng.random((fan_in, fan_out), dtype=np.float32)
        w *= 2 * limit
        w -= limit
        weights += [w, np.zeros(fan_out, np.float32)]
    return weights


class BowPeer(Peer):
    """A peer on the bag-of-words data: load_data reads the CSR arrays (train and test rows
    split by ``options["train_rows"]``)."""

    def __init__(self, threads, options):
        self.train_rows = int(options["train_rows"])

    def load_data(self, data_dir, variant="plain"):
        import scipy.sparse as sp
        data, indices, indptr, y = (np.load(os.path.join(data_dir, n + ".npy")) for n in BOW_FILES)
        x = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, BOW_FEATURES))
        n = self.train_rows
        self.x, self.y, self.x_test, self.y_test = x[:n], y[:n], x[n:], y[n:]

    def info(self):
        return {"summary": self.summary(), "blas": ""}


class BowFastnnPeer(BowPeer):
    def __init__(self, threads, options):
        super().__init__(threads, options)
        import fastnn
        fastnn.set_num_threads(threads)
        self.fastnn = fastnn

    def summary(self):
        return f"fastnn {self.fastnn.__version__}: fit(csr_matrix, y)"

    def build(self, batch_size):
        self.initial = bow_weights()
        self.model = fastnn_bow_model(self.fastnn, self.initial)
        try:  # one small fit: does this fastnn take the CSR matrix at all?
            self.model.fit(self.x[:2 * batch_size], self.y[:2 * batch_size], epochs=1, batch_size=batch_size,
                           verbose=0)
        except (TypeError, ValueError) as exc:
            raise NotImplementedError(f"{UNSUPPORTED} ({type(exc).__name__}: {exc})") from None
        self.reset()

    def reset(self):
        reset_fastnn_bow_model(self.model, self.fastnn, self.initial)

    def fit_rows(self, n, batch_size, seed):
        x, y = self.x[:n], self.y[:n]
        start = time.perf_counter()
        self.model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
        return time.perf_counter() - start

    def probabilities(self):
        return self.model.predict(self.x_test)


class BowTorchPeer(BowPeer):
    adam = "fused"

    def __init__(self, threads, options):
        super().__init__(threads, options)
        import torch
        torch.set_num_threads(threads)
        self.torch = torch

    def summary(self):
        return (f"torch {self.torch.__version__} eager, torch.sparse.mm on a per-batch CSR tensor, "
                f"Adam({self.adam}=True), {self.torch.get_num_threads()} threads")

    def _tensor(self, csr):
        torch = self.torch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR tensor support is in beta state"
            return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(np.int64)),
                                           torch.from_numpy(csr.indices.astype(np.int64)),
                                           torch.from_numpy(csr.data), size=csr.shape)

    def build(self, batch_size):
        torch = self.torch
        self.w1 = torch.nn.Parameter(torch.empty(BOW_FEATURES, BOW_HIDDEN))  # (in, out): x @ W1
        self.b1 = torch.nn.Parameter(torch.empty(BOW_HIDDEN))
        self.out = torch.nn.Linear(BOW_HIDDEN, BOW_CLASSES)
        self.y_t = torch.from_numpy(self.y)
        self.initial = bow_weights()
        self.reset()

    def reset(self):
        torch = self.torch
        w1, b1, w2, b2 = self.initial
        with torch.no_grad():
            self.w1.copy_(torch.from_numpy(w1))
            self.b1.copy_(torch.from_numpy(b1))
            self.out.weight.copy_(torch.from_numpy(w2.T))
            self.out.bias.copy_(torch.from_numpy(b2))
        self.optimizer = torch.optim.Adam([self.w1, self.b1, *self.out.parameters()], lr=1e-3, **{self.adam: True})

    def _logits(self, xb):
        return self.out(self.torch.relu(self.torch.sparse.mm(xb, self.w1) + self.b1))

    def fit_rows(self, n, batch_size, seed):
        torch = self.torch
        start = time.perf_counter()
        order = np.random.default_rng(seed).permutation(n)
        for lo in range(0, n, batch_size):
            rows = order[lo:lo + batch_size]
            self.optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(self._logits(self._tensor(self.x[rows])),
                                                     self.y_t[torch.from_numpy(rows)])
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - start

    def probabilities(self):
        with self.torch.no_grad():
            return self.torch.softmax(self._logits(self._tensor(self.x_test)), dim=1).numpy()


class BowTorchForeachPeer(BowTorchPeer):
    adam = "foreach"


class BowSklearnPeer(BowPeer):
    def __init__(self, threads, options):
        super().__init__(threads, options)
        import sklearn
        import threadpoolctl
        self.limits = threadpoolctl.threadpool_limits(limits=threads)  # kept: the limit lasts while it lives
        self.sklearn = sklearn

    def summary(self):
        return f"scikit-learn {self.sklearn.__version__} MLPClassifier(solver='adam', alpha=0) partial_fit on CSR"

    def build(self, batch_size):
        from sklearn.neural_network import MLPClassifier
        self.clf = MLPClassifier(hidden_layer_sizes=(BOW_HIDDEN,), activation="relu", solver="adam", alpha=0.0,
                                 batch_size=batch_size, learning_rate_init=1e-3, max_iter=1, shuffle=True,
                                 random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.clf.partial_fit(self.x[:batch_size], self.y[:batch_size], classes=np.arange(BOW_CLASSES))
        self.initial = bow_weights()
        self.reset()

    def reset(self):
        clf = self.clf
        clf.coefs_ = [w.copy() for w in self.initial[0::2]]
        clf.intercepts_ = [b.copy() for b in self.initial[1::2]]
        if hasattr(clf, "_optimizer"):
            del clf._optimizer  # partial_fit then builds a fresh Adam over the new arrays

    def fit_rows(self, n, batch_size, seed):
        x, y = self.x[:n], self.y[:n]  # a CSR slice is a copy: made before the clock starts, as for the others
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            self.clf.partial_fit(x, y)  # one shuffled epoch
            return time.perf_counter() - start

    def probabilities(self):
        return self.clf.predict_proba(self.x_test)


PEER_CLASSES = {"bow_fastnn": BowFastnnPeer, "bow_torch_fused": BowTorchPeer,
                "bow_torch_foreach": BowTorchForeachPeer, "bow_sklearn": BowSklearnPeer}

if __name__ == "__main__":  # python peers_sparse.py DIR TRAIN_ROWS TEST_ROWS: the data files (peers.py)
    import json
    print(json.dumps(save_bow(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
