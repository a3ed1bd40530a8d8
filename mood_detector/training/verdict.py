"""The stop rule and the verdict of a training run, from the held-out probe loss of each epoch.

:class:`BestTracker` keeps the best probe loss seen (the run keeps those weights as ``best.pt`` and ends with
them) and says when to stop: when the probe loss has not improved over the last ``patience`` optimiser steps
(and at least :data:`MIN_EPOCHS_WAITED` epochs, since the probe is scored once per epoch). Patience is in steps
like the budget, so it means the same amount of training whatever the number of volumes.

:func:`verdict` says in plain words whether the best model learned its task: the constant and position-prior
predictors (:mod:`mood_detector.training.diagnostic`) are what a model reaches without looking at the image,
so a model is ``ready`` only when its probe loss is at most ``1 - MARGIN`` of the better of the two. The
bundled brain NSA model reaches about 0.3 of the constant's loss (docs/nsa.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: how far below the better baseline the best probe loss must be for ``ready`` (a fraction of that baseline).
#: Measured on brain MRI (docs/training-your-data.md, "How the number of scans matters"): runs that ended at 0.57-0.61
#: of the baseline found planted outliers in a held-out real brain at pixel AP 0.01-0.05, one at 0.46 at 0.15; so
#: ``ready`` needs at most half the baseline.
MARGIN = 0.5
#: the stop rule waits at least this many probe evaluations (epochs) without improvement
MIN_EPOCHS_WAITED = 3
#: default patience, in optimiser steps (``train --patience``)
PATIENCE = 400

READY = "ready"
UNDER_TRAINED = "under-trained: train longer or add scans"
NOT_LEARNED = "did not learn the task: train longer, add scans or check the data"


@dataclass
class BestTracker:
    """The best probe loss so far and how long ago it was (checkpointed with the run).

    Attributes:
        patience: steps without improvement after which :attr:`stop` is true (0 = never).
        best_loss: the best probe loss so far (``inf`` before the first).
        best_epoch: the epoch (from 1) that reached it (0 before the first).
        since_steps, since_epochs: steps and epochs trained since then.
        const_loss, prior_loss: the probe set's baselines (the same every epoch).
    """

    patience: int = PATIENCE
    best_loss: float = math.inf
    best_epoch: int = 0
    since_steps: int = 0
    since_epochs: int = 0
    const_loss: float = math.nan
    prior_loss: float = math.nan

    def update(self, loss: float, epoch: int, steps: int, const_loss: float, prior_loss: float) -> bool:
        """Record epoch ``epoch``'s (from 1) probe ``loss`` after its ``steps``; whether it is the new best."""
        self.const_loss, self.prior_loss = const_loss, prior_loss
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.since_steps, self.since_epochs = loss, epoch, 0, 0
            return True
        self.since_steps += steps
        self.since_epochs += 1
        return False

    @property
    def stop(self) -> bool:
        """No improvement over the last ``patience`` steps and at least :data:`MIN_EPOCHS_WAITED` epochs."""
        return bool(self.patience) and self.since_steps >= self.patience and self.since_epochs >= MIN_EPOCHS_WAITED

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key != "patience":  # the patience of this run, not the resumed one's
                setattr(self, key, value)


@dataclass(frozen=True)
class Verdict:
    """Whether a model learned its task: ``word`` (``ready``, ``under-trained`` or ``not learned``), the
    sentence to print and the numbers behind it."""

    word: str
    text: str
    best_loss: float
    const_loss: float
    prior_loss: float

    def card_values(self) -> dict[str, Any]:
        """The values the model card records (``extra``)."""
        return {"verdict": self.text, "probe_loss_best": round(self.best_loss, 5),
                "probe_const_loss": round(self.const_loss, 5), "probe_prior_loss": round(self.prior_loss, 5)}


def verdict(best_loss: float, const_loss: float, prior_loss: float, margin: float = MARGIN) -> Verdict:
    """``ready`` when ``best_loss`` is at least ``margin`` below the better baseline; ``under-trained`` when it
    beats it by less; ``did not learn`` when it does not beat it."""
    baseline = min(const_loss, prior_loss)
    ratio = best_loss / baseline if baseline > 0 else math.inf
    numbers = (f"best probe loss {best_loss:.4f} = {ratio:.2f} of the better baseline (constant {const_loss:.4f}, "
               f"position prior {prior_loss:.4f}); ready needs at most {1 - margin:.2f}")
    if ratio <= 1 - margin:
        return Verdict("ready", f"{READY} ({numbers})", best_loss, const_loss, prior_loss)
    if ratio < 1:
        return Verdict("under-trained", f"{UNDER_TRAINED} ({numbers})", best_loss, const_loss, prior_loss)
    return Verdict("not learned", f"{NOT_LEARNED} ({numbers})", best_loss, const_loss, prior_loss)
