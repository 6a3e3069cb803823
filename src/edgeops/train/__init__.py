"""Train: data in, a validated, gated, exported (ONNX, parity-checked) model and its manifest out."""
