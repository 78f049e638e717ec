"""The candidate networks of the network question (notebook 10): which ResNet-110 did the paper use?

Three choices the paper leaves open (the shortcut at the two stage transitions, the convolutions'
init, the classifier's init), every candidate they make, and the overrides and seeds with which each
at-initialisation figure measures them. `shared.figures.candidates` scores them; Fig 6 shows them.
"""

from dataclasses import dataclass

from .protocol import Measurement

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
# mini-batch here; Fig 3 (a forward pass per step size) and Table 1 (a per-example product per
# layer) are the costly ones: Fig 3 is measured on fewer step sizes, and both on one network.
MEASURES = {
    "fig5_depth_profile": {},
    "fig2_gradients": {},
    "fig6_logit_gradients": dict(epoch_batches=1),
    "fig4_diverging_update": {},
    "table1_contributions": {},
    "fig3_relative_loss": dict(sizes=20),
}
SEEDS = {"fig3_relative_loss": (0,), "table1_contributions": (0,)}
DEFAULT_SEEDS = (0, 1, 2)


def candidate_config(measurement: Measurement, candidate: Candidate, preset: str = "paper"):
    """`measurement`'s config for `candidate` under `preset`, with the overrides of MEASURES."""
    return measurement.config(preset, **MEASURES[measurement.name], **candidate.fields())


def candidate_seeds(experiment: str, preset: str) -> tuple[int, ...]:
    """The seeds measured per candidate (one for the smoke preset, which only checks the code)."""
    return (0,) if preset == "smoke" else SEEDS.get(experiment, DEFAULT_SEEDS)
