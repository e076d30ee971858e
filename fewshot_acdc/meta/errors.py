"""Errors MAML raises for bad episodes and diverging inner loops."""
from __future__ import annotations

from typing import Optional


class EpisodeError(ValueError):
    """A malformed episode: empty support, shapes or dtypes that do not fit, labels out of range.

    ``task`` is the episode's index within the meta-batch (``None`` for a single episode).
    """

    def __init__(self, message: str, task: Optional[int] = None) -> None:
        where = f"episode {task} of the meta-batch: " if task is not None else "episode: "
        super().__init__(where + message)
        self.task = task


class NonFiniteLossError(FloatingPointError):
    """A NaN or infinite loss (or meta-gradient) during MAML.

    Attributes name where it happened, 0-based like the meta-batch:

    * ``task``: index of the task in the meta-batch (``None`` when not in a meta-batch);
    * ``phase``: ``"support"`` (inner loop), ``"query"`` (after adaptation) or ``"meta-gradient"``;
    * ``step``: for ``"support"``, the 1-based inner step whose loss was not finite (the loss
      computed before that step's update); ``steps``: the inner steps the task runs.
    """

    def __init__(self, phase: str, value: float, task: Optional[int] = None,
                 step: Optional[int] = None, steps: Optional[int] = None,
                 tasks: Optional[int] = None, during_meta_step: bool = False) -> None:
        self.phase, self.value, self.task, self.step, self.steps, self.tasks = phase, value, task, step, steps, tasks
        if phase == "support":
            what = f"non-finite support loss ({value}) at inner step {step} of {steps}"
        elif phase == "query":
            what = f"non-finite query loss ({value}) after {steps} inner steps"
        else:
            what = f"non-finite meta-gradient (norm {value})"
        if task is not None:
            what += f" in task {task} (0-based) of a meta-batch of {tasks}" if tasks else f" in task {task}"
        hint = ("; the inner learning rate may be too large for this backbone, or the episode's "
                "images contain NaN/Inf" if phase != "meta-gradient" else "; the meta-learning rate may be too large")
        # In a meta-step the check runs before optimizer.step(), so the model is left as it was.
        note = " The meta-step was abandoned before optimizer.step(): no parameter was updated." if during_meta_step else ""
        super().__init__(what + hint + "." + note)
