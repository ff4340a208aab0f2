"""Which points each method's front visits: the presets ``neurogate run`` offers (``fronts = "default"``,
``"full"`` or ``"off"``), as plain data so the study's settings can check a name without loading a model.

Every point is an intervention on its own scale: the default circuit rule (CNA) and the paper's rule at
shares of all MLP neurons and multipliers ``m``; a circuit given to the study (e.g. from ``neurogate tune``)
at shares ``f`` of the intervention it records (``m_f = 1 + f * (m - 1)``: ``f = 1`` is the recorded point,
``f = 0.5`` moves each neuron half as far from unsteered); CAA at strengths ``s``; directional ablation at a
weight ``w`` in [0, 1] (``w = 1`` projects the whole direction out, ``w = 0.5`` half of it). A front is
walked from the gentlest point to the strongest and stops once it saturates (``front_saturation``)."""

from __future__ import annotations

from dataclasses import dataclass

from neurogate.errors import ConfigError


@dataclass(frozen=True)
class FrontPlan:
    """The points of every method's front. ``cna_sizes`` / ``paper_sizes``: shares of all MLP neurons;
    ``cna_multipliers``: the multipliers each CNA size is tried at (the paper's rule runs at ``m = 0``);
    ``given_scales``: the shares of a given circuit's recorded intervention; ``caa_strengths``;
    ``ablation_weights``."""

    cna_sizes: tuple[float, ...]
    cna_multipliers: tuple[float, ...]
    paper_sizes: tuple[float, ...]
    given_scales: tuple[float, ...]
    caa_strengths: tuple[float, ...]
    ablation_weights: tuple[float, ...]


#: ``default`` fits the default study's budget (points the study already evaluates are reused);
#: ``full`` traces every method more finely and CNA at several multipliers.
PRESETS: dict[str, FrontPlan] = {
    "default": FrontPlan(
        cna_sizes=(0.0001, 0.0003, 0.001, 0.003, 0.01),
        cna_multipliers=(0.0,),
        paper_sizes=(0.001, 0.006),
        given_scales=(0.5, 1.0, 1.5),
        caa_strengths=(0.5, 1.0, 2.0),
        ablation_weights=(0.25, 1.0),
    ),
    "full": FrontPlan(
        cna_sizes=(0.0001, 0.0003, 0.001, 0.003, 0.01),
        cna_multipliers=(0.5, 0.0, -1.0),
        paper_sizes=(0.001, 0.003, 0.006, 0.01),
        given_scales=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
        caa_strengths=(0.25, 0.5, 1.0, 1.5, 2.0, 3.0),
        ablation_weights=(0.25, 0.5, 0.75, 1.0),
    ),
}
OFF = "off"
CHOICES: tuple[str, ...] = (*PRESETS, OFF)


def check_fronts(name: str) -> str:
    """``name`` when it is a preset or ``"off"``; otherwise a ConfigError naming the choices."""
    if name not in CHOICES:
        raise ConfigError(f"fronts must be one of {', '.join(CHOICES)}, got {name!r}")
    return name
