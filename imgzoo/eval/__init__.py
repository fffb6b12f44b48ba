"""Measuring a model, never training it: evaluate, predict and TTA; the per-epoch History; the plots."""

from imgzoo.eval.evaluation import EvalResult, eval_sums, evaluate, predict
from imgzoo.eval.history import History

__all__ = ["EvalResult", "History", "eval_sums", "evaluate", "predict"]
