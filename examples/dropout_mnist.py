"""What dropout is for: the wide MNIST network trained with and without Dropout.

    python examples/dropout_mnist.py [--epochs 10] [--rate 0.5] [--train-rows 60000]

Both models start from the same weights (784-1024-1024-10, ReLU, softmax, Adam 1e-3, batch
256, seed 0); one has ``Dropout(rate)`` after each hidden layer. Per epoch it prints the
training error (over the epoch's batches, as fit logs it: with dropout active) and the test
error (inference mode). Without dropout the training error falls towards zero while the test
error stops improving; with dropout the two stay closer. Uses $FASTNN_DATA/mnist, else the
user cache, else downloads MNIST (see ``fastnn.load_mnist``).
"""
import argparse

import fastnn
from fastnn import MLP, Adam, Dense, Dropout


def build(rate):
    layers = [Dense(784, 1024, activation="relu")]
    layers += [Dropout(rate)] if rate else []
    layers += [Dense(1024, 1024, activation="relu")]
    layers += [Dropout(rate)] if rate else []
    layers += [Dense(1024, 10, activation="softmax")]
    model = MLP(layers, seed=0)
    model.compile(loss="cross_entropy", optimizer=Adam(1e-3), metrics=["accuracy"])
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--train-rows", type=int, default=60000)
    args = parser.parse_args(argv)
    x, y, x_test, y_test = fastnn.load_mnist()
    x, y = x[: args.train_rows], y[: args.train_rows]
    runs = {}
    initial = build(0.0).get_weights()
    for rate in (0.0, args.rate):
        model = build(rate)
        model.set_weights(initial)
        history = model.fit(x, y, epochs=args.epochs, batch_size=256, validation_data=(x_test, y_test), verbose=0)
        runs[rate] = history.history
    print(f"784-1024-1024-10, Adam(1e-3), batch 256, {x.shape[0]:,} training rows; error = 1 - accuracy")
    print(f"{'epoch':>5}  {'no dropout: train':>18} {'test':>7}  {f'dropout {args.rate}: train':>20} {'test':>7}")
    for e in range(args.epochs):
        a, b = runs[0.0], runs[args.rate]
        print(f"{e + 1:>5}  {1 - a['accuracy'][e]:>18.4f} {1 - a['val_accuracy'][e]:>7.4f}  "
              f"{1 - b['accuracy'][e]:>20.4f} {1 - b['val_accuracy'][e]:>7.4f}")


if __name__ == "__main__":
    main()
