"""The pinned environment: constraints.txt drives every install, and the installed versions match it."""
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What the project imports directly (pyproject.toml's dependencies and extras): each must be pinned
DIRECT = ("torch", "torchvision", "numpy", "pandas", "matplotlib", "seaborn", "pillow", "tqdm", "submitit",
          "jupyter", "ipykernel", "papermill", "nbconvert", "nbformat", "pyyaml", "pytest", "nbval")


def pins() -> dict[str, str]:
    """constraints.txt as {normalised name: version}."""
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            assert pinned, f"constraints.txt pins exact versions (name==version), got {line!r}"
            found[re.sub(r"[-_.]+", "-", name).lower()] = pinned
    return found


def test_every_direct_dependency_is_pinned_and_installed_at_its_pin():
    pinned = pins()
    for name in DIRECT:
        assert name in pinned, f"{name} is not pinned in constraints.txt"
        assert version(name) == pinned[name], f"{name} {version(name)} installed, {pinned[name]} pinned"


def test_every_installed_pinned_package_matches_its_pin():
    mismatched = []
    for name, pinned in pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:  # a platform's extra wheel (CUDA on Linux) may be absent elsewhere
            continue
        if installed != pinned:
            mismatched.append(f"{name} {installed} (pinned {pinned})")
    assert not mismatched, "installed versions differ from constraints.txt: " + ", ".join(mismatched)


def test_the_installs_use_the_constraints():
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()
    env = (REPO / "environment.yml").read_text()
    assert "- -c constraints.txt" in env and "- quarto" in env
