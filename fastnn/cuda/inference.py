"""CUDA twin of ``fastnn.kernels.inference``: ``predict`` and ``evaluate`` over many batches,
each batch copied from the host into the workspace's input slice and run through
``network.network_forward``'s launches in inference mode."""
from . import Plan
from .losses import loss_forward, outputs_loss
from .network import network_forward, view
from ..kernels.table import N_OUT


def predict_batches(out, net, x, batch_size, work, stream, training=False, control=None, graph=None):
    """out (flat, n x n_out, device) = network(x[i]) for every row of the host array ``x``,
    ``batch_size`` rows per forward pass, each batch copied into the input slice of ``acts``;
    ``training`` as in ``network_forward`` (Dropout's step in ``control[C_STEP]``)."""
    n, n_in = x.shape
    n_out = int(net.layers[-1, N_OUT])
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        xb = view(work.acts, work.act_off[0], (hi - lo) * n_in)
        xb.copy_to_device(x[lo:hi].reshape(-1), stream=stream)
        plan = Plan(stream)
        network_forward(net, xb, work, hi - lo, out=view(out, lo * n_out, (hi - lo) * n_out), plan=plan,
                        training=training, control=control, graph=graph)
        plan.run()


def evaluate_batches(net, loss, x, y, batch_size, work, records, control, stream, graph=None, weights=None,
                     outputs=None):
    """Enqueue the loss and correct rows of every ``batch_size`` rows of host arrays (x, y) into
    ``records`` (as ``losses.loss_forward``); ``control[C_BATCH]`` must be 0. The caller sums
    loss x rows over the batches, as ``kernels.inference.evaluate_batches``. ``weights``: None, or
    (a host array of a loss weight per row, a device buffer of ``batch_size``)."""
    n, n_in = x.shape
    layers, acts, act_off = net.layers, work.acts, work.act_off
    n_out = int(layers[-1, N_OUT])
    last = layers.shape[0] - 1
    for lo in range(0, n, batch_size):
        rows = min(lo + batch_size, n) - lo
        xb = view(acts, act_off[0], rows * n_in)
        yb = view(work.targets, 0, rows * n_out)
        xb.copy_to_device(x[lo:lo + rows].reshape(-1), stream=stream)
        yb.copy_to_device(y[lo:lo + rows].reshape(-1), stream=stream)
        wb = None
        if weights is not None:
            wb = weights[1][:rows]
            wb.copy_to_device(weights[0][lo:lo + rows], stream=stream)
        plan = Plan(stream)
        deferred = network_forward(net, xb, work, rows, defer_softmax=outputs is None, plan=plan, graph=graph)
        pred = view(acts, act_off[last + 1], rows * n_out)
        if outputs is not None:
            outputs_loss(records, None, pred, yb, outputs, rows, n_out, control, train=False, plan=plan, weights=wb)
        else:
            loss_forward(records, pred, yb, loss, rows, n_out, control, softmax_first=deferred, plan=plan,
                         weights=wb)
        plan.run()
