"""Layers of your own: a subclass of fastnn.Layer with trained weights, and a Lambda.

    python examples/custom_layer.py [--epochs 3]

``Swish`` (a Lambda): y = x * sigmoid(x), with its derivative written out. ``Gate`` (a subclass):
y = x * sigmoid(x @ G + c), a learned per-feature gate, with weights declared in ``build`` and
both passes as static methods of NumPy arrays. fastnn compiles them with Numba when the model is
built and runs them inside the compiled training step, next to the built-in layers. The model
trains on MNIST ($FASTNN_DATA/mnist, else the user cache, else a download), is saved, and is
loaded back with ``custom_objects``.
"""
import argparse
import os
import tempfile

import numpy as np

import fastnn
from fastnn import MLP, Adam, Dense, Lambda


# Constants as the arrays' own type (x.dtype.type): Numba types a bare 1.0 as float64, which
# would turn the float32 model's arrays into float64 ones.

def swish(x):
    one = x.dtype.type(1.0)
    return x / (one + np.exp(-x))


def swish_backward(x, y, dy):
    one = x.dtype.type(1.0)
    s = one / (one + np.exp(-x))
    return dy * (s + x * s * (one - s))


class Gate(fastnn.Layer):
    """y = x * sigmoid(x @ G + c): each feature scaled by a gate computed from all of them."""

    def __init__(self, input_dim=None):
        self.input_dim = input_dim

    def build(self, input_dim):
        self.add_weight("gate_kernel", (input_dim, input_dim))
        self.add_weight("gate_bias", (input_dim,), initializer="zeros")
        return input_dim

    @staticmethod
    def forward(x, kernel, bias):
        one = x.dtype.type(1.0)
        return x / (one + np.exp(-(x @ kernel + bias)))

    @staticmethod
    def backward(x, kernel, bias, y, dy):
        one = x.dtype.type(1.0)
        g = one / (one + np.exp(-(x @ kernel + bias)))
        dz = dy * x * g * (one - g)  # through the gate
        return dy * g + dz @ kernel.T, (x.T @ dz, dz.sum(axis=0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    x, y, x_test, y_test = fastnn.load_mnist()
    model = MLP([Dense(784, 128, activation=None), Lambda(swish, swish_backward), Gate(),
                 Dense(128, 10, activation="softmax")], seed=0)
    model.compile("cross_entropy", Adam(1e-3), metrics=["accuracy"])
    model.summary()
    model.fit(x, y, epochs=args.epochs, batch_size=64, validation_data=(x_test, y_test), verbose=2)
    path = os.path.join(tempfile.mkdtemp(), "custom.npz")
    model.save(path)
    loaded = fastnn.load_model(path, custom_objects={"Gate": Gate, "swish": swish, "swish_backward": swish_backward})
    print(f"saved and loaded: the same predictions: {np.array_equal(loaded.predict(x_test), model.predict(x_test))}")


if __name__ == "__main__":
    main()
