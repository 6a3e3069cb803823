"""Staged rollouts: pure planning (plan.py), persisted state (state.py), the executor (controller.py), signed
desired state (signer.py), the telemetry health gate (health.py), and the fleet as the broker sees it (fleet.py)."""
