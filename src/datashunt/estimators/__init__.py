"""The one N-stage engine (engine.py, its stages in stages.py, learned deferral in deferral.py) and
its faces: a shunt, a cascade, a generator shunt."""
