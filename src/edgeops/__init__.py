"""edgeops control plane: validate, train, gate, export, sign and roll out models to edge agents."""

__version__ = "0.1.0"
