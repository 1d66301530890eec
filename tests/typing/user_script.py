"""A user's script, type-checked with mypy --strict against fastnn's annotations (tests/test_typing.py)."""
import numpy as np
import numpy.typing as npt

import fastnn
from fastnn import MLP, Adam, BatchNormalization, Dense, Dropout, EarlyStopping, Input, Model


def build(hidden: int) -> MLP:
    model = MLP([Dense(784, hidden, activation="relu"), BatchNormalization(), Dropout(0.2),
                 Dense(hidden, 10, activation="softmax")], seed=0)
    model.compile(loss="categorical_crossentropy", optimizer=Adam(1e-3), metrics=["accuracy"])
    return model


def train(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> float:
    model = build(32)
    history = model.fit(x, y, epochs=1, batch_size=64, validation_split=0.1, verbose=0,
                        callbacks=[EarlyStopping(patience=2)])
    losses: list[float] = history.history["loss"]
    probabilities: npt.NDArray[np.floating] = model.predict(x[:10])
    weights: list[npt.NDArray[np.floating]] = model.get_weights()
    model.set_weights(weights)
    model.layers[0].trainable = False
    predictor = model.predictor()
    out: npt.NDArray[np.floating] = predictor.predict(x[:1])
    model.save("model.fastnn")
    again: MLP = fastnn.load_model("model.fastnn")
    fastnn.set_num_threads(1)
    inp = Input(784)
    functional = Model(inp, Dense(784, 10, activation="softmax")(inp))
    functional.compile(loss="categorical_crossentropy", optimizer="adam")
    result = model.evaluate(x, y)
    print(losses, probabilities.shape, out.shape, again, result, functional.count_params())
    return float(losses[-1])
