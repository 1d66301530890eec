"""``python -m fastnn``: train the seed framework's MNIST classifier (784-100-50-10, ReLU,
Softmax, Adam, cross-entropy, batch 50) and print per-epoch loss, accuracy and samples/s.

Uses MNIST when its files can be found ($FASTNN_DATA/mnist, the user cache, or a download),
else the 8x8 digits that ship inside fastnn, so that it runs offline.
"""
import argparse
import sys

from . import MLP, Adam, CrossEntropy, Dataset, Dense, ReLU, Softmax


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastnn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["auto", "mnist", "digits"], default="auto")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    name = "mnist" if args.dataset == "auto" else args.dataset
    try:
        dataset = Dataset(name=name, batch_size=args.batch_size, seed=args.seed)
    except (FileNotFoundError, RuntimeError) as exc:
        if args.dataset != "auto":
            raise
        # The whole message: where it looked, and how to point FASTNN_DATA at a copy.
        print(f"{exc}\nTraining on the 8x8 digits bundled with fastnn instead.", file=sys.stderr)
        dataset = Dataset(name="digits", batch_size=args.batch_size, seed=args.seed)
    print(dataset)

    classifier = MLP(seed=args.seed)
    optimizer = Adam(learningRate=args.learning_rate)
    classifier.addLayer(Dense(inputDim=dataset.input_dim, outputDim=100, activation=ReLU(), optimizer=optimizer))
    classifier.addLayer(Dense(inputDim=100, outputDim=50, activation=ReLU(), optimizer=optimizer))
    classifier.addLayer(Dense(inputDim=50, outputDim=dataset.num_classes, activation=Softmax(), optimizer=optimizer))
    classifier.summary()
    history = classifier.train(dataset, loss=CrossEntropy(), epochs=args.epochs,
                               metrics=["train_loss", "test_loss", "train_accuracy", "test_accuracy"],
                               tensorboard=False, callbacks={}, verbose=2)
    print(f"final test accuracy: {history.history['test_accuracy'][-1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
