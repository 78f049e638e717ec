"""Training, in three parts: `loop` is the paper's training loop for a run (its schedule, doubling
rule, divergence and evaluation); `engine` runs K of them as one stacked network, in a precision
and memory layout; `runner` stores runs and trains grids; `__main__` is the command line
(`python -m shared.train`). The names below are the package's interface."""

from .engine import (MEMORY_FORMATS, STACK_MAY_DIFFER, Runs, StackedSGD, check_stackable, evaluate,
                     network_health, shared_fields, train_epoch)
from .loop import (CHANCE_ACCURACY, RunEnd, RunState, divergence_thresholds, divergent, first_step,
                   learning_failure, load_checkpoint, lr_at, next_total_epochs, plateaued, run_epoch, train,
                   train_together)
from .runner import run_grid, run_together, run_training, together_groups

__all__ = ["MEMORY_FORMATS", "STACK_MAY_DIFFER", "Runs", "StackedSGD", "check_stackable", "evaluate",
           "network_health", "shared_fields", "train_epoch", "CHANCE_ACCURACY", "RunEnd", "RunState",
           "divergence_thresholds", "divergent", "first_step", "learning_failure", "load_checkpoint", "lr_at",
           "next_total_epochs", "plateaued", "run_epoch", "train", "train_together",
           "run_grid", "run_together", "run_training", "together_groups"]
