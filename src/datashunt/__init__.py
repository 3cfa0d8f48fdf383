"""datashunt: a small model answers what it is sure of; a large model answers the rest."""

from .estimators.cascade import Cascade
from .estimators.generator import ShuntGenerator
from .estimators.segments import Segments
from .estimators.shunt import ShuntClassifier
from .estimators.subtasks import Subtasks

__version__ = "0.1.0"
__all__ = ["Cascade", "ShuntClassifier", "Segments", "ShuntGenerator", "Subtasks", "__version__"]
