"""Documents as bags of word ids: an Embedding with padding, then a small classifier.

    python examples/embedding_bag_of_words.py [--epochs 5] [--combiner mean]

Synthetic documents of up to 40 word ids from a vocabulary of 5,000 (id 0 pads the short
ones); a document is positive when it holds more of the 50 "positive" words than of the 50
"negative" ones. ``Embedding(5000, 16, input_length=40, mask_zero=True, combiner="mean")`` averages
the vectors of a document's words (torch.nn.EmbeddingBag(mode="mean", padding_idx=0)), a
Dense(32, relu) and a softmax read the average. The padding vector stays zero and untrained.
A second model shows Masking: the same average with a tenth of its entries missing (-1),
which Masking passes on as 0 without gradient.
"""
import argparse

import numpy as np

import fastnn
from fastnn import MLP, Adam, Dense, Embedding, Masking

VOCABULARY, LENGTH = 5000, 40


def documents(n, rng):
    lengths = rng.integers(5, LENGTH + 1, n)
    ids = rng.integers(101, VOCABULARY, (n, LENGTH))
    signal = rng.integers(1, 101, (n, LENGTH))  # ids 1-50 positive, 51-100 negative
    use = rng.random((n, LENGTH)) < 0.2
    ids = np.where(use, signal, ids)
    ids[np.arange(LENGTH)[None, :] >= lengths[:, None]] = 0  # padding
    positive = ((ids >= 1) & (ids <= 50)).sum(axis=1)
    negative = ((ids >= 51) & (ids <= 100)).sum(axis=1)
    keep = positive != negative
    return ids[keep], (positive > negative)[keep].astype(np.int64)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--combiner", default="mean", choices=["mean", "sum", "concat"])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x, y = documents(30000, rng)
    x_test, y_test = documents(5000, rng)

    model = MLP([Embedding(VOCABULARY, 16, input_length=LENGTH, mask_zero=True, combiner=args.combiner),
                 Dense(None, 32, activation="relu"), Dense(None, 2, activation="softmax")], seed=0)
    model.compile("cross_entropy", Adam(3e-3), metrics=["accuracy", "auc"])
    model.summary()
    model.fit(x, y, epochs=args.epochs, batch_size=64, validation_data=(x_test, y_test), verbose=2)
    loss, accuracy, auc = model.evaluate(x_test, y_test)
    print(f"test accuracy {accuracy:.4f}, AUC {auc:.4f}; padding vector still zero: "
          f"{bool(np.all(model.get_weights()[0][0] == 0))}")

    # Masking: features with missing entries (-1), passed on as 0 with no gradient through them.
    features = rng.normal(size=(len(x), 8))
    features[:, 0] = y + 0.3 * rng.normal(size=len(x))
    features[rng.random(features.shape) < 0.1] = -1.0
    masked = MLP([Masking(-1.0, input_dim=8), Dense(8, 16, activation="relu"), Dense(16, 2, activation="softmax")],
                 seed=0).compile("cross_entropy", Adam(1e-2), metrics=["accuracy"])
    history = masked.fit(features, y, epochs=args.epochs, batch_size=64, verbose=0)
    print(f"Masking model: training accuracy {history.history['accuracy'][-1]:.4f} with 10% of entries missing")


if __name__ == "__main__":
    main()
