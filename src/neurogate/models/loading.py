"""Loading any causal LM (hub id, local directory, GGUF file or ``zoo:NAME``) with its adapter."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from neurogate.errors import ModelLoadError
from neurogate.models import zoo  # the zoo is below loading: it never imports it
from neurogate.models.architectures import Adapter, resolve_adapter
from neurogate.models.devices import dtype_name, resolve_device, resolve_dtype
from neurogate.models.hf import load_tokenizer, offline, prepare_tokenizer, strip_gguf_quantization
from neurogate.progress import quiet_gguf_conversion

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A transformers causal LM, its tokenizer, and the adapter that locates its neuron sites."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    adapter: Adapter
    spec: str
    source: str = ""
    _notes: set[str] = field(default_factory=set, repr=False)

    @property
    def device(self) -> torch.device:
        """The device of the input embeddings (where inputs go)."""
        weight = self.model.get_input_embeddings().weight
        assert isinstance(weight, torch.Tensor)
        return weight.device

    @property
    def dtype(self) -> torch.dtype:
        weight = self.model.get_input_embeddings().weight
        assert isinstance(weight, torch.Tensor)
        return weight.dtype

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def shape(self) -> dict[str, Any]:
        """What a circuit must match to be applied: family, layer count, width, hidden size (and, in a
        mixture-of-experts model, ``moe``: the expert layout behind the flat neuron numbering)."""
        shape: dict[str, Any] = {
            "family": self.adapter.family,
            "model_type": str(getattr(self.model.config, "model_type", "")),
            "n_layers": self.adapter.n_layers,
            "d_mlp": self.adapter.d_mlp,
            "d_model": self.adapter.d_model,
        }
        if self.adapter.moe is not None:
            shape["moe"] = self.adapter.moe.to_dict()
        return shape

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary of the model (what ``neurogate info`` prints)."""
        return {
            "spec": self.spec,
            "source": self.source,
            "family": self.adapter.family,
            "model_type": str(getattr(self.model.config, "model_type", "")),
            "layers": self.adapter.n_layers,
            "neurons_per_layer": self.adapter.d_mlp,
            "total_neurons": self.adapter.n_neurons,
            "hidden_size": self.adapter.d_model,
            "dtype": dtype_name(self.dtype),
            "device": str(self.device),
            "chat_template": self.has_chat_template,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            **({"experts": self.adapter.moe.to_dict()} if self.adapter.moe is not None else {}),
        }

    def note_once(self, key: str, message: str) -> None:
        """Log ``message`` the first time ``key`` is seen for this model."""
        if key not in self._notes:
            self._notes.add(key)
            logger.warning(message)


def shape_digest(shape: dict[str, Any]) -> str:
    """A short stable hash of a model's :attr:`LoadedModel.shape`."""
    blob = json.dumps(shape, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def resolve_source(spec: str) -> tuple[str, str | None]:
    """Map a local or hub spec to (directory-or-hub-id, gguf file name or None), cheaply: paths must exist
    and look like a model (a folder with config.json, a file with a GGUF header). Zoo specs are pulled."""
    if spec.startswith("zoo:"):
        return str(zoo.ensure(spec.removeprefix("zoo:"))), None
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {spec!r} does not exist: check the path")
        check_gguf_header(path)
        return str(path.parent), path.name
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"directory {spec!r} has no config.json, so it is not a transformers model directory"
            )
        return str(path), None
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        raise ModelLoadError(f"model path {spec!r} does not exist: check the path")
    return spec, None


LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,  # also json.JSONDecodeError and UnicodeDecodeError
    KeyError,
    EOFError,
    RuntimeError,  # e.g. weights whose shapes do not match the config
    struct.error,
    SafetensorError,
)
"""What transformers, safetensors and the GGUF reader raise on a missing or damaged model: each is
translated into one :class:`ModelLoadError` that names the real cause."""


def check_gguf_header(path: Path) -> None:
    """Refuse a file that cannot be a GGUF model before transformers reads it (empty, wrong magic bytes,
    cut inside its 24-byte header)."""
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{path} is empty (0 bytes), so not a GGUF model; download it again")
    with path.open("rb") as fh:
        head = fh.read(24)
    if head[:4] != b"GGUF":
        raise ModelLoadError(
            f"{path} does not start with the GGUF magic bytes, so it is not a GGUF model (or it is damaged)"
        )
    if len(head) < 24:
        raise ModelLoadError(f"{path} is cut short ({size} bytes) inside its GGUF header; download it again")


def _load_error(spec: str, source: str, exc: BaseException) -> ModelLoadError:
    """One message for a failed load: the real cause for a local model, the cache hint only for a hub id."""
    cause = f"{type(exc).__name__}: {exc}".strip().rstrip(".")
    if isinstance(exc, struct.error):
        cause = f"the file ends early, so it is truncated or damaged ({exc})"
    elif isinstance(exc, SafetensorError):
        cause = f"a .safetensors weights file is truncated or damaged ({exc})"
    if spec.startswith("zoo:"):
        name = spec.removeprefix("zoo:")
        return ModelLoadError(
            f"could not load {spec}: {cause}. The cached copy may be damaged: run "
            f"`neurogate models pull {name} --force`"
        )
    if Path(source).expanduser().exists():
        return ModelLoadError(f"could not load the local model {spec!r}: {cause}")
    hint = (
        "Use an offline zoo model (`neurogate models list`, e.g. zoo:smollm2-135m-instruct), a local model "
        "directory, or a .gguf file"
    )
    if offline():
        return ModelLoadError(
            f"could not load {spec!r}: HF_HUB_OFFLINE=1 is set and it is not in the local Hugging Face cache "
            f"({cause}). {hint}."
        )
    return ModelLoadError(f"could not load {spec!r} ({cause}). {hint}.")


def load_model(
    spec: str,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "auto",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM with its tokenizer and adapter.

    ``spec``: a hub id, a local model directory, a path to a ``.gguf`` file, or ``zoo:NAME``.
    ``dtype``: ``"auto"`` (bf16 on CUDA and on CPUs with fast bf16, else float32) or a dtype name.
    ``device``: ``"auto"`` (CUDA when present, spread over several GPUs with accelerate), ``"cpu"``, ...
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    source, gguf_file = resolve_source(spec)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype,
        "trust_remote_code": trust_remote_code,
        "local_files_only": offline(),
    }
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if dev.type == "cuda" and device == "auto" and torch.cuda.device_count() > 1:
        kwargs["device_map"] = "auto"
    try:
        tokenizer = load_tokenizer(source, gguf_file, trust_remote_code)
        with quiet_gguf_conversion() if gguf_file else contextlib.nullcontext():
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except LOAD_ERRORS as exc:
        raise _load_error(spec, source, exc) from exc
    if gguf_file:
        strip_gguf_quantization(model)
    if "device_map" not in kwargs:
        model.to(dev)  # type: ignore[arg-type]
    model.eval()
    model.requires_grad_(False)
    adapter = resolve_adapter(model)
    loaded = LoadedModel(model=model, tokenizer=tokenizer, adapter=adapter, spec=spec, source=source)
    if not loaded.has_chat_template:
        loaded.note_once(
            "no-chat-template",
            f"{spec}: the tokenizer has no chat template, so prompts are used as raw text",
        )
    return loaded


def wrap_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: str = "<in-memory>"
) -> LoadedModel:
    """Wrap an already-built transformers model (e.g. from a config) as a :class:`LoadedModel`."""
    prepare_tokenizer(tokenizer)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, adapter=resolve_adapter(model), spec=spec)


def weights_digest(lm: LoadedModel) -> str:
    """A hash of every weight tensor's name, shape and a strided sample of 4096 of its values.

    Cheap (no pass over all the weights), and it tells apart models that share a spec, such as fine-tunes or
    a model edited in memory, unless the edit misses every sampled value.
    """
    h = hashlib.sha256()
    with torch.no_grad():
        for name, param in lm.model.named_parameters():
            flat = param.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)][:4096]
            h.update(f"{name}:{tuple(param.shape)}".encode())
            h.update(sample.to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:12]
