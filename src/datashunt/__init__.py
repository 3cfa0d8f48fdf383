"""datashunt: a small model answers what it is sure of; a large model answers the rest."""

from .cascade import Cascade
from .shunt import ShuntClassifier

__version__ = "0.1.0"
__all__ = ["Cascade", "ShuntClassifier", "__version__"]
