"""ONNX Runtime as a predict peer of ``peers.py`` (the peer ``onnxruntime``, in a worker process
of its own): it runs the model that fastnn's worker exported with ``model.to_onnx(path)`` after
training a config, so both predict with the same weights.

``onnxruntime.InferenceSession`` on the CPU execution provider, ``SessionOptions``:
``intra_op_num_threads`` = ``--threads``, ``inter_op_num_threads`` = 1, everything else
ONNX Runtime's defaults (graph optimizations: all). Only numpy and the standard library at
module level; onnxruntime inside the peer.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers_adapters import Peer  # noqa: E402


class OnnxRuntimePeer(Peer):
    def __init__(self, threads, options):
        import onnxruntime
        self.ort = onnxruntime
        self.threads = threads
        self.session = None

    def info(self):
        return {"summary": f"onnxruntime {self.ort.__version__}, CPUExecutionProvider, intra_op_num_threads "
                           f"{self.threads}, inter_op_num_threads 1",
                "blas": "none: ONNX Runtime's own CPU kernels (MLAS)"}

    def load_model(self, path):
        """An InferenceSession on the ONNX file at ``path`` (replacing the previous one)."""
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.session = self.ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        return [i.name for i in self.session.get_inputs()]

    def probabilities(self):
        return self.session.run(None, {self.input_name: self.x_test})[0]

    def one_row_call(self, mode, row):
        session, feed = self.session, {self.input_name: row}
        return lambda: session.run(None, feed)


PEER_CLASSES = {"onnxruntime": OnnxRuntimePeer}
