"""``edgeops demo``: the whole loop on one machine, with simulated traffic."""
