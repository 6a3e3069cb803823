"""The bare parts the agent is measured against: an onnxruntime session set up as the agent sets up its own, fed
through the public ``InferenceSession.run`` from the same dict records the agent gets.

Imports nothing from edge_agent or edgeops. Run as a script it is the minimal HTTP server benchmarks/agent_http.py
measures the agent's HTTP API against:

    python benchmarks/agent_baseline.py --port P --model model.onnx --manifest manifest.json
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort


def session_for(model: bytes) -> ort.InferenceSession:
    """One intra-op and one inter-op thread, as the agent's ModelRunner: both sides get the same cores."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def feeds_for(inputs: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The least a caller must do: one array per input from the dict records (no checks at all).
    ``inputs``: the manifest's input specs as JSON (name, column, dtype, missing_token)."""
    feeds = {}
    for spec in inputs:
        column, name = spec["column"], spec["name"]
        if spec["dtype"] == "string":
            token = spec.get("missing_token", "")
            values: list[Any] = [token if r[column] is None else r[column] for r in records]
            feeds[name] = np.array(values, dtype=object).reshape(-1, 1)
        else:
            feeds[name] = np.array([np.nan if r[column] is None else r[column] for r in records],
                                   dtype=np.float32).reshape(-1, 1)
    return feeds


def answers_for(result: list[Any]) -> list[dict[str, Any]]:
    """onnxruntime's outputs as the JSON answers a client needs: label and class probabilities per row."""
    return [{"label": label, "probabilities": probs}
            for label, probs in zip(result[0].tolist(), result[1].tolist(), strict=True)]


def serve_minimal(port: int, model: Path, manifest: Path) -> None:
    """Stdlib HTTP/1.1 (a thread per connection, keep-alive), JSON in, ``session.run``, JSON out: no checks, no
    telemetry, no probation. The same request and answer shapes as the agent's POST /v1/predict."""
    session = session_for(model.read_bytes())
    inputs = json.loads(manifest.read_text())["inputs"]
    outputs = [o.name for o in session.get_outputs()]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as the agent: small answers go out at once

        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            records = body["records"] if "records" in body else [body["record"]]
            answers = answers_for(session.run(outputs, feeds_for(inputs, records)))
            data = json.dumps({"predictions": answers} if "records" in body else {"prediction": answers[0]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 1024  # a deep backlog: no side loses connections to a short queue
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the minimal stdlib server around one ONNX session")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args()
    serve_minimal(args.port, args.model, args.manifest)
