"""Neuron multipliers: scale a circuit's MLP neurons at every position, through hooks.

The neuron site is ``blocks.{L}.mlp.post``, the input of each layer's down-projection, ``[batch, pos,
d_mlp]``. A steer multiplies the circuit's neurons there by ``m`` (``m = 0`` ablates, ``m > 1`` amplifies)
for prompt and generated tokens alike. Steers compose: two steers on the same neuron multiply.
"""

from __future__ import annotations

from typing import Any, ClassVar

from neurogate.discovery.circuit import Circuit, Multiplier
from neurogate.models.hooks import Handle, check_scale
from neurogate.models.loading import LoadedModel
from neurogate.steering.base import MULTIPLIER, Intervention, Scale, Source
from neurogate.steering.controls import random_circuit


def steer(lm: LoadedModel, circuit: Circuit, multiplier: Multiplier = 0.0) -> Handle:
    """Multiply each circuit neuron's activation by ``multiplier`` at every position until removed.

    The same as :meth:`Circuit.apply`. Returns a :class:`Handle` (also a context manager):
    ``with steer(lm, circuit, 0.0): ...``. Raises :class:`~neurogate.errors.CircuitError` when the circuit
    was found on a model of another shape.
    """
    return circuit.apply(lm, multiplier)


class NeuronScaling(Intervention):
    """CNA: multiply the circuit's neurons by ``m`` (the multiplier scale; 0 ablates, 1 changes nothing)."""

    kind: ClassVar[str] = "cna"
    scale: ClassVar[Scale] = MULTIPLIER
    source: ClassVar[Source] = "circuit"
    summary: ClassVar[str] = "multiply the circuit's MLP neurons by m at every position"

    def __init__(self, lm: LoadedModel, circuit: Circuit, multiplier: float) -> None:
        super().__init__()
        circuit.check_model(lm)
        check_scale(circuit.factors(multiplier), lm.dtype, "multiplier")
        self.lm = lm
        self.circuit = circuit
        self.value = float(multiplier)

    def attach(self) -> Handle:
        return self.circuit.apply(self.lm, self.value)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "neurons": len(self.circuit)}


class MeanAblation(NeuronScaling):
    """Mean-ablation: move the circuit's neurons toward their mean on the negative prompts,
    ``a <- m * a + (1 - m) * mean_neg`` (``m = 0`` sets each to that mean; ``m = 1`` changes nothing)."""

    kind: ClassVar[str] = "mean"
    summary: ClassVar[str] = "move the circuit's neurons toward their negative-prompt mean by m"

    def attach(self) -> Handle:
        return self.circuit.apply(self.lm, self.value, toward="mean")


class RandomControl(NeuronScaling):
    """The random-neuron control: as many neurons as the circuit, in the same layers, chosen at random
    (``seed=``), multiplied by ``m``."""

    kind: ClassVar[str] = "random"
    options: ClassVar[tuple[str, ...]] = ("seed",)
    summary: ClassVar[str] = "multiply random neurons with the circuit's per-layer counts by m"

    def __init__(self, lm: LoadedModel, circuit: Circuit, multiplier: float, seed: int = 0) -> None:
        super().__init__(lm, random_circuit(circuit, seed=int(seed)), multiplier)
        self.seed = int(seed)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": self.seed}
