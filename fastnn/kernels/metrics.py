"""Metric kernels on (B, C) predictions and targets."""
from ..config import kernel


@kernel(inline=True)
def count_correct(pred, target):
    """Rows whose prediction matches the target: argmax equality for C > 1 (one-hot or
    probability targets), threshold at 0.5 for a single output (binary accuracy)."""
    rows, cols = pred.shape
    correct = 0
    for i in range(rows):
        if cols == 1:
            if (pred[i, 0] > 0.5) == (target[i, 0] > 0.5):
                correct += 1
        else:
            best_p = 0
            best_t = 0
            for j in range(1, cols):
                if pred[i, j] > pred[i, best_p]:
                    best_p = j
                if target[i, j] > target[i, best_t]:
                    best_t = j
            if best_p == best_t:
                correct += 1
    return correct
