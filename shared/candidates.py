"""Which ResNet-110 did the paper use? Candidate networks scored against the paper's figures.

The paper states a 110-layer CIFAR ResNet with Xavier initialisation, nothing more. Three choices it
leaves open change every at-initialisation figure: the shortcut at the two stage transitions
(option A, zero-padding, or option B, a 1x1 convolution + BN; He et al. 2016, Sec. 3.3), the
convolutions' init and the classifier's init. Each candidate is measured with the figures' own
experiments (`shared.experiments`), and `shared.paper` turns each figure into one distance to the
paper's values (0 = on the paper's numbers; in decades, so 1 = a factor of 10 off).
"""

from dataclasses import dataclass

from .experiments import experiment_config, run_experiment

# The convolution inits tried: the paper's stated Xavier, torchvision's Kaiming (fan_out), and
# PyTorch's constructor default (what a 2018 PyTorch model got without an explicit init).
CONV_INITS = ("xavier_uniform", "kaiming_normal_fan_out", "pytorch_default")
FC_CHOICES = ("same", "pytorch_default")
SHORTCUT_CHOICES = (None, "B")  # None: option A, the CIFAR ResNets' standard


@dataclass(frozen=True)
class Candidate:
    shortcut: str | None
    init: str
    fc_init: str

    @property
    def name(self) -> str:
        fc = self.init if self.fc_init == "same" else self.fc_init
        return f"{self.shortcut or 'A'} | conv {self.init} | fc {fc}"

    def fields(self) -> dict:
        return dict(shortcut=self.shortcut, init=self.init, fc_init=self.fc_init)


def candidates() -> list[Candidate]:
    """Every shortcut x conv init x classifier init, each network once (a pytorch_default
    classifier beside pytorch_default convolutions is the "same" one)."""
    return [Candidate(s, i, f) for s in SHORTCUT_CHOICES for i in CONV_INITS for f in FC_CHOICES
            if not (i == "pytorch_default" and f == "pytorch_default")]


# experiment -> overrides of its paper config, and the seeds measured. Fig 6 needs only the first
# mini-batch here; Fig 3 is the costly one (a forward pass per step size) and is measured on
# fewer step sizes and seeds.
MEASURES = {
    "fig5_depth_profile": {},
    "fig2_gradients": {},
    "fig6_logit_gradients": dict(epoch_batches=1),
    "fig4_diverging_update": {},
    "table1_contributions": {},
    "fig3_relative_loss": dict(sizes=20),
}
SEEDS = {"fig3_relative_loss": (0,)}
DEFAULT_SEEDS = (0, 1, 2)


def candidate_config(experiment: str, candidate: Candidate, preset: str = "paper"):
    return experiment_config(experiment, preset, **MEASURES[experiment], **candidate.fields())


def candidate_runs(experiment: str, candidate: Candidate, preset: str = "paper",
                   seeds: tuple[int, ...] | None = None, data_dir=None, device=None) -> list[dict]:
    """The stored runs of `experiment` for `candidate` (computed where missing)."""
    cfg = candidate_config(experiment, candidate, preset)
    return [run_experiment(experiment, cfg, seed, data_dir, device)
            for seed in seeds or SEEDS.get(experiment, DEFAULT_SEEDS)]


def main() -> None:
    """Compute every candidate's runs, the cheap experiments first."""
    import time
    for experiment in MEASURES:
        for candidate in candidates():
            start = time.perf_counter()
            candidate_runs(experiment, candidate)
            print(f"{experiment} {candidate.name}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
