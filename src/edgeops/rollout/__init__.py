"""Staged rollouts: pure planning (plan.py), persisted state (state.py), and the executor (controller.py)."""
