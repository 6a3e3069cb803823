"""Retrain: close the loop: a drift or performance event retrains, gates and rolls out a model."""
