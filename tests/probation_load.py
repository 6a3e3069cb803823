"""What probation tests and benchmarks need: models with a known cost, and a machine that is busy.

``with_extra_work`` gives a release a branch of real arithmetic that does not change its outputs, so two
releases can differ in cost by a known factor while answering alike. ``CpuHog`` keeps every core busy with
other processes, as a device's other work would.
"""

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import Release, with_bytes


def with_extra_work(release: Release, key: Ed25519PrivateKey, rounds: int, width: int = 1024) -> Release:
    """The same model plus ``rounds`` dense ``width × width`` matrix products per row, multiplied by 0 and
    added to the probabilities: the cost grows in proportion to ``rounds``, the answers do not change.

    The products start from the ``income`` input, so onnxruntime cannot fold them into constants.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(release.data)
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["work_probabilities" if o == "probabilities" else o for o in node.output]
    weights = np.random.default_rng(rounds).normal(0, 1 / width, (width, width)).astype(np.float32)
    graph.initializer.extend([
        numpy_helper.from_array(weights, "work_w"),
        numpy_helper.from_array(np.ones((1, width), np.float32), "work_ones"),
        helper.make_tensor("work_zero", TensorProto.FLOAT, [], [0.0]),
    ])
    nodes = [helper.make_node("Mul", ["income", "work_ones"], ["work_0"])]  # [N, width]
    for i in range(rounds):
        nodes.append(helper.make_node("MatMul", [f"work_{i}", "work_w"], [f"work_{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"work_{rounds}"], ["work_sum"], keepdims=1),  # [1, 1]
        helper.make_node("Mul", ["work_sum", "work_zero"], ["work_nothing"]),
        helper.make_node("Add", ["work_probabilities", "work_nothing"], ["probabilities"]),
    ]
    graph.node.extend(nodes)
    return with_bytes(release, model.SerializeToString(), key)


@contextlib.contextmanager
def CpuHog(processes: int | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """A busy loop in a process of its own on every core (or ``processes``) for the duration of the block."""
    count = processes or os.cpu_count() or 2
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
