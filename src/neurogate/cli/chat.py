"""`neurogate chat`: an interactive multi-turn chat with a steered model, switchable on the fly."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from neurogate.cli import app as cli
from neurogate.cli.steer import (
    NO_STEERING_OPTIONS,
    CircuitOpt,
    MaxNewOpt,
    SteeringOptions,
    SystemOpt,
    build_intervention,
    resolve_value,
    steering_options,
)
from neurogate.cli.threads import speed
from neurogate.errors import NeurogateError

if TYPE_CHECKING:
    from neurogate.models.loading import LoadedModel
    from neurogate.steering.base import Intervention

HELP = """commands:
  /m X         set the neuron multiplier m (cna, random): 0 ablates, 1 is unchanged
  /s X         set the strength s (caa, ablation): 0 is unchanged, 1 is full
  /method NAME switch method: cna, mean, caa, ablation or random
  /off, /on    turn steering off or back on
  /reset       forget the conversation
  /help        show this help
  /quit        leave (end of input works too)"""


@dataclass
class ChatSession:
    """The REPL's state: model, steering choice and the conversation so far."""

    lm: LoadedModel
    method: str
    value: float
    settings: dict[str, Any]
    system_prompt: str | None = None
    max_new_tokens: int = 256
    enabled: bool = True
    history: list[dict[str, str]] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    _intervention: Intervention | None = None
    last_speed: str = ""  # the last reply's length, time and tokens/s

    def intervention(self) -> Intervention:
        if self._intervention is None:
            self._intervention = build_intervention(
                self.lm, self.method, self.value, cache=self.cache, **self.settings
            )
        return self._intervention

    def status(self) -> str:
        return self.intervention().label if self.enabled else "unsteered"

    def set(self, method: str | None = None, value: float | None = None) -> None:
        """Switch method and/or its value; the new intervention is built now so errors show at once. A new
        method on another scale starts at that scale's full effect (m = 0, s = 1)."""
        from neurogate.steering.registry import KINDS, get_kind

        new_method = method or self.method
        if new_method not in KINDS:
            raise NeurogateError(f"unknown method {new_method!r}; choose one of {', '.join(KINDS)}")
        old = (self.method, self.value, self._intervention)
        if value is None and get_kind(new_method).scale != get_kind(self.method).scale:
            value = resolve_value(new_method, None, None)
        self.method, self._intervention = new_method, None
        if value is not None:
            self.value = value
        try:
            self.intervention()
        except NeurogateError:
            self.method, self.value, self._intervention = old
            raise

    def render(self) -> str:
        """The conversation as model-ready text ending where the assistant speaks next."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages = system + self.history
        if self.lm.has_chat_template:
            text = self.lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return str(text)
        turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join([*turns, "Assistant:"])

    def reply(self, user: str) -> str:
        from neurogate.models.generation import generate

        self.history.append({"role": "user", "content": user})
        steering = self.intervention() if self.enabled else None
        started = time.perf_counter()
        (out,) = generate(
            self.lm,
            [self.render()],
            intervention=steering,
            max_new_tokens=self.max_new_tokens,
            batch_size=1,
            preformatted=True,
        )
        self.last_speed = speed(out.n_generated, time.perf_counter() - started)
        self.history.append({"role": "assistant", "content": out.text})
        return out.text

    def command(self, line: str) -> bool:
        """Run one slash command; False means quit."""
        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        if name in ("quit", "exit", "q"):
            return False
        if name == "help":
            cli.console.print(HELP, highlight=False)
        elif name == "off":
            self.enabled = False
        elif name == "on":
            self.enabled = True
        elif name == "reset":
            self.history.clear()
            cli.console.print("conversation cleared")
            return True
        elif name in ("m", "s"):
            value = _number(arg, f"/{name}")
            flags = (value, None) if name == "m" else (None, value)
            self.set(value=resolve_value(self.method, *flags))
        elif name == "method":
            self.set(method=arg)
        else:
            cli.console.print(f"unknown command /{name}; /help lists them", markup=False, highlight=False)
            return True
        cli.console.print(f"steering: {self.status()}", markup=False, highlight=False)
        return True


def _number(text: str, command: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise NeurogateError(f"{command} takes a number, e.g. {command} 0.5; got {text!r}") from None


@cli.app.command(rich_help_panel=cli.STEER)
@steering_options
def chat(
    model: cli.CircuitModelOpt = cli.DEFAULT_SPEC,
    circuit: CircuitOpt = None,
    steering: SteeringOptions = NO_STEERING_OPTIONS,
    max_new_tokens: MaxNewOpt = 256,
    system_prompt: SystemOpt = None,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    trust_remote_code: cli.TrustOpt = False,
) -> None:
    """Chat with a steered model; type /help for commands (/m 0.5, /method caa, /off, /on, /reset, /quit).

    Example: neurogate chat --model zoo:qwen2.5-coder-1.5b-instruct --circuit circuit.json --multiplier 0
    """
    settings: dict[str, Any] = {
        "circuit_path": Path(circuit) if circuit else None,
        "positive": steering.positive,
        "negative": steering.negative,
        "layer": steering.layer,
        "seed": steering.seed,
    }
    model = cli.circuit_model(model, circuit)
    method, value = steering.resolved(circuit)
    lm = cli.load(model, dtype, device, trust_remote_code)
    session = ChatSession(lm, method, value, settings, system_prompt, max_new_tokens)
    session.intervention()
    cli.console.print(
        f"chat with {model}; steering: {session.status()}; /help for commands", markup=False, highlight=False
    )
    while True:
        cli.console.print("you> ", end="", highlight=False)
        line = sys.stdin.readline()
        if not line:
            cli.console.print()
            break
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not session.command(line):
                    break
                continue
            reply = escape(session.reply(line))
            cli.console.print(f"[bold]{escape(session.status())}>[/] {reply}", highlight=False)
            cli.err_console.print(f"({session.last_speed})", style="dim", markup=False, highlight=False)
        except NeurogateError as exc:
            cli.console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
