"""The estimators: a shunt, a cascade, a generator shunt."""
