"""Ready-made networks built from ranvier layers (and dense torch.nn baselines)."""
from .classifier import SequenceClassifier as SequenceClassifier
from .classifier import build_classifier as build_classifier
