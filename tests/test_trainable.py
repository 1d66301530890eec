"""layer.trainable = False (Keras' semantics): a frozen layer's weights get no update, a frozen
BatchNormalization runs in inference mode in training too, compile applies a change; and
model.weights / trainable_weights / non_trainable_weights."""
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import MLP, SGD, BatchNormalization, Dense

LR = 0.5


def data(rows=16):
    rng = np.random.default_rng(0)
    return rng.standard_normal((rows, 5)), rng.integers(0, 3, rows)


def model(freeze=(), device="cpu", clip=None):
    m = MLP([Dense(5, 6, activation="tanh"), BatchNormalization(momentum=0.3), Dense(6, 3, activation="softmax")],
            seed=2, dtype="float64", device=device)
    for k in freeze:
        m.layers[k].trainable = False
    m.compile(loss="categorical_crossentropy", optimizer=SGD(LR, global_clipnorm=clip) if clip else SGD(LR))
    return m


@pytest.mark.parametrize("freeze", [(0,), (1,), (0, 1)])
def test_one_step_equals_torch_with_the_frozen_layers_constant(freeze):
    torch = pytest.importorskip("torch")
    x, y = data()
    m = model(freeze)
    W1, b1, gamma, beta, mean, var, W2, b2 = [torch.tensor(w) for w in m.get_weights()]
    trained = [t for t, k in ((W1, 0), (b1, 0), (gamma, 1), (beta, 1), (W2, 2), (b2, 2)) if k not in freeze]
    for t in trained:
        t.requires_grad_(True)
    h = torch.tanh(torch.from_numpy(x) @ W1 + b1)
    # torch.nn.BatchNorm1d in train() mode, or in eval() mode when frozen (Keras' rule).
    bn_training = 1 not in freeze
    z = torch.nn.functional.batch_norm(h, mean.clone(), var.clone(), gamma, beta, training=bn_training,
                                       momentum=0.3, eps=1e-5)
    loss = torch.nn.functional.cross_entropy(z @ W2 + b2, torch.from_numpy(y))
    loss.backward()
    before = m.get_weights()
    np.testing.assert_allclose(m.train_on_batch(x, y), loss.item(), rtol=1e-12)
    after = m.get_weights()
    expected = [t.detach().numpy() - LR * t.grad.numpy() if t.requires_grad else t.numpy()
                for t in (W1, b1, gamma, beta)] + [None, None] + \
               [t.detach().numpy() - LR * t.grad.numpy() if t.requires_grad else t.numpy() for t in (W2, b2)]
    for i, (mine, theirs) in enumerate(zip(after, expected)):
        if theirs is not None:
            np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12, err_msg=f"array {i}")
    # A frozen BatchNorm's running statistics stay; a trained one's move.
    moved = not np.array_equal(after[4], before[4])
    assert moved == bn_training


def test_a_change_takes_effect_at_compile_and_fit_warns_until_then():
    x, y = data()
    m = model()
    m.fit(x, y, epochs=1, verbose=0)
    m.layers[0].trainable = False
    with pytest.warns(UserWarning, match="call compile"):
        m.fit(x, y, epochs=1, verbose=0)  # still trains as compiled
    m.compile(loss="categorical_crossentropy", optimizer=SGD(LR))
    frozen = m.get_weights()[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.fit(x, y, epochs=2, verbose=0)
    for a, b in zip(m.get_weights()[:2], frozen):
        np.testing.assert_array_equal(a, b)
    m.layers[0].trainable = True
    m.compile(loss="categorical_crossentropy", optimizer=SGD(LR))
    m.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(m.get_weights()[0], frozen[0])


def test_weights_trainable_weights_and_non_trainable_weights():
    m = model()
    shapes = [w.shape for w in m.weights]
    assert shapes == [(5, 6), (6,), (6,), (6,), (6,), (6,), (6, 3), (3,)]
    assert [w.shape for w in m.trainable_weights] == [(5, 6), (6,), (6,), (6,), (6, 3), (3,)]
    assert [w.shape for w in m.non_trainable_weights] == [(6,), (6,)]  # running mean, variance
    m.layers[2].trainable = False
    assert [w.shape for w in m.trainable_weights] == [(5, 6), (6,), (6,), (6,)]
    assert [w.shape for w in m.non_trainable_weights] == [(6,), (6,), (6, 3), (3,)]
    np.testing.assert_array_equal(m.non_trainable_weights[2], m.get_weights()[6])
    with pytest.raises(TypeError, match="trainable must be True or False"):
        m.layers[0].trainable = "no"


def test_trainable_is_saved_and_loaded(tmp_path):
    m = model(freeze=(1,))
    assert m.layers[1].get_config()["trainable"] is False
    assert "trainable" not in m.layers[0].get_config()  # as before for a trainable layer
    path = tmp_path / "m.fastnn"
    m.save(path)
    loaded = fastnn.load_model(path)
    assert [layer.trainable for layer in loaded.layers] == [True, False, True]
    x, y = data()
    before = loaded.get_weights()[2:4]
    loaded.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(loaded.get_weights()[2:4], before):
        np.testing.assert_array_equal(a, b)


def test_clipping_by_the_global_norm_reads_only_the_trained_tensors():
    torch = pytest.importorskip("torch")
    x, y = data()
    m = model(freeze=(2,), clip=0.01)  # the output layer frozen: its gradients are the largest
    W1, b1, gamma, beta, mean, var, W2, b2 = [torch.tensor(w) for w in m.get_weights()]
    trained = [W1, b1, gamma, beta]
    for t in trained:
        t.requires_grad_(True)
    h = torch.tanh(torch.from_numpy(x) @ W1 + b1)
    z = torch.nn.functional.batch_norm(h, mean, var, gamma, beta, training=True, momentum=0.3, eps=1e-5)
    torch.nn.functional.cross_entropy(z @ W2 + b2, torch.from_numpy(y)).backward()
    # global_clipnorm: the norm of the trained gradients together, as torch's clip_grad_norm_ over
    # the parameters given to it; W2's and b2's gradients in the norm would scale these otherwise.
    norm = np.sqrt(sum(np.sum(t.grad.numpy() ** 2) for t in trained))
    expected = [t.detach().numpy() - LR * t.grad.numpy() * min(1.0, 0.01 / (norm + 1e-6)) for t in trained]
    m.train_on_batch(x, y)
    after = m.get_weights()
    for mine, theirs in zip(after[:4], expected):
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-12)


def test_cuda_matches_the_cpu_with_a_frozen_batchnorm():
    x, y = data()
    cpu, gpu = model(freeze=(1,)), model(freeze=(1,), device="cuda")
    gpu.set_weights(cpu.get_weights())
    cpu.fit(x, y, epochs=2, batch_size=8, verbose=0)
    gpu.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for a, b in zip(gpu.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


def test_dense_with_one_number_says_how_to_write_keras_units():
    with pytest.raises(TypeError, match=r"Dense\(units=16\) as in Keras, or Dense\(input_dim, output_dim\)"):
        Dense(16)
    assert Dense(units=16).output_dim == 16


def test_validation_freq_validates_every_nth_epoch_as_keras():
    x, y = data(40)
    m = model()
    validated = []
    seen = fastnn.LambdaCallback(on_epoch_end=lambda epoch, logs: validated.append("val_loss" in logs))
    h = m.fit(x[:30], y[:30], epochs=5, batch_size=10, validation_data=(x[30:], y[30:]), validation_freq=2,
              callbacks=[seen], verbose=0)
    assert validated == [False, True, False, True, False]  # after epochs 2 and 4 (Keras' numbering)
    assert len(h.history["loss"]) == 5 and len(h.history["val_loss"]) == 2
    with pytest.raises(ValueError, match="validation_freq"):
        m.fit(x, y, validation_freq=0, verbose=0)
