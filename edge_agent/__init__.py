"""The edgeops edge agent: follows its desired model over MQTT, serves ONNX inference, reports telemetry.

This package must stay light enough for a device: it imports onnxruntime, numpy, paho-mqtt and cryptography,
never Prefect, scikit-learn, pandas, scipy or ``edgeops`` (tests/unit/test_dependency_line.py enforces it).
"""

__version__ = "0.1.0"
