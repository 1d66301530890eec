"""A binary classifier whose AUC goes to TensorBoard, and its training curves as a PNG.

    python examples/binary_auc_tensorboard.py [--digit 5] [--epochs 8] [--log-dir logs/binary] [--plot curves.png]
    tensorboard --logdir logs/binary

Is an MNIST image the digit ``--digit``? About one image in ten is, so accuracy alone says
little (always answering "no" scores 0.9); the ROC AUC, the precision-recall AUC, precision
and recall show what the model learned. A 784-64-1 network (ReLU, sigmoid output, binary
cross-entropy, Adam 1e-3, batch 128) logs these for training (counted inside the compiled
step, AUC over 200 score buckets) and for the test set (exact) every epoch, writes them for
TensorBoard in ``--log-dir`` (``train/`` and ``validation/``, Keras' layout, with weight
histograms) and draws the curves with matplotlib. Uses $FASTNN_DATA/mnist, else the user
cache, else downloads MNIST (see ``fastnn.load_mnist``).
"""
import argparse

import numpy as np

import fastnn
from fastnn import MLP, Adam, Dense

METRICS = ["accuracy", "auc", "pr_auc", "precision", "recall"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digit", type=int, default=5, choices=range(10))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--log-dir", default="logs/binary")
    parser.add_argument("--plot", default="curves.png", help="where to save the training curves (PNG)")
    args = parser.parse_args(argv)

    x_train, labels_train, x_test, labels_test = fastnn.load_mnist()
    y_train = (labels_train == args.digit).astype(np.float32)
    y_test = (labels_test == args.digit).astype(np.float32)
    print(f"digit {args.digit}: {y_train.mean():.1%} of the training images, {y_test.mean():.1%} of the test images")

    model = MLP([Dense(784, 64, activation="relu"), Dense(64, 1, activation="sigmoid")], seed=0)
    model.compile(loss="binary_crossentropy", optimizer=Adam(1e-3), metrics=METRICS)
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=128, validation_data=(x_test, y_test),
                        callbacks=[fastnn.TensorBoard(args.log_dir, histogram_freq=1)], verbose=0)

    print(f"{'epoch':>5} " + " ".join(f"{name:>10} {'val_' + name:>14}" for name in ["loss"] + METRICS))
    for epoch in range(len(history.epoch)):
        print(f"{epoch + 1:>5} " + " ".join(f"{history.history[name][epoch]:>10.4f} "
                                            f"{history.history['val_' + name][epoch]:>14.4f}"
                                            for name in ["loss"] + METRICS))
    try:
        import matplotlib
        matplotlib.use("Agg")
        history.plot(args.plot, metrics=["loss", "auc", "pr_auc", "recall"])
        print(f"curves: {args.plot}")
    except ImportError:
        print("matplotlib is not installed: no curves drawn (pip install \"fastnn[plot]\")")
    print(f"TensorBoard: tensorboard --logdir {args.log_dir}")


if __name__ == "__main__":
    main()
