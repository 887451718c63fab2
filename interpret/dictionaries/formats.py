"""Dictionaries in the field's formats: SAELens's (read and written), ViT-Prisma's SAEs and transcoders, saev's SAEs.

Hooks are named as TransformerLens and ViT-Prisma name them: an SAE of block L reads `blocks.L.hook_resid_post`; a
transcoder of MLP L reads `blocks.L.ln2.hook_normalized` (the MLP's norm's output) and writes
`blocks.L.hook_mlp_out`. A dictionary whose hook, model or width does not match is refused with a message that
says which; weights are read without pickle.

SAELens (`cfg.json` + `sae_weights.safetensors`): `architecture` "standard" (ReLU), "topk", "jumprelu",
"transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"; `d_in`, `d_sae`, `d_out`,
`apply_b_dec_to_input`, `normalize_activations` ("none", "layer_norm", "constant_norm_rescale"), `k`,
`metadata.hook_name` (older files: `hook_name` at the top), `metadata.model_name`; `W_skip` `[d_out, d_in]`,
`threshold` `[d_sae]` (older: `log_threshold`). SAELens has no TopK transcoder: one trained here is written as a
JumpReLU transcoder whose threshold is the training's typical smallest active pre-activation (as SAELens turns
BatchTopK into JumpReLU); every other dictionary is written exactly, its constant input and output scales folded
into the weights.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import torch

from ..errors import InterpretError
from ..integrity import write_json_atomic
from ..models import ClipModel, layer_index
from .model import Dictionary, DictionaryConfig

SAELENS_CONFIG, SAELENS_WEIGHTS = "cfg.json", "sae_weights.safetensors"
SAELENS_ARCHITECTURES = {  # architecture -> (kind, activation, skip)
    "standard": ("sae", "relu", False), "topk": ("sae", "topk", False), "jumprelu": ("sae", "jumprelu", False),
    "transcoder": ("transcoder", "relu", False), "skip_transcoder": ("transcoder", "relu", True),
    "jumprelu_transcoder": ("transcoder", "jumprelu", False),
    "jumprelu_skip_transcoder": ("transcoder", "jumprelu", True)}


def hook_names(kind: str, layer: int) -> tuple[str, str]:
    """(the hook a dictionary reads, the hook it writes), TransformerLens's names."""
    if kind == "sae":
        return f"blocks.{layer}.hook_resid_post", f"blocks.{layer}.hook_resid_post"
    return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"


def kind_of_hooks(hook: str | None, hook_out: str | None, where: str) -> tuple[str, int]:
    """(kind, layer) of a dictionary reading `hook` (and writing `hook_out`, where it says); refused otherwise."""
    read = re.fullmatch(r"blocks\.(\d+)\.(hook_resid_post|ln2\.hook_normalized)", str(hook or ""))
    if read is None:
        raise InterpretError(f"{where} reads {hook}; read here: SAEs of the stream after a block "
                             "(blocks.L.hook_resid_post) and transcoders of an MLP (from blocks.L.ln2.hook_normalized "
                             "to blocks.L.hook_mlp_out).")
    layer, kind = int(read.group(1)), "sae" if read.group(2) == "hook_resid_post" else "transcoder"
    if kind == "transcoder" and hook_out not in (None, f"blocks.{layer}.hook_mlp_out"):
        raise InterpretError(f"{where} reads {hook} and writes {hook_out}; a transcoder read here writes its own "
                             f"MLP's output (blocks.{layer}.hook_mlp_out).")
    return kind, layer


def model_names(model: ClipModel) -> set[str]:
    """The names a checkpoint may give `model` by: its label, its open_clip name (and tag), and its weights' Hugging
    Face id as ViT-Prisma writes it ('open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K')."""
    import open_clip

    names = {model.label, model.name, f"{model.name}/{model.pretrained}", f"{model.name}:{model.pretrained}"}
    if model.pretrained:
        try:
            hub = (open_clip.get_pretrained_cfg(model.name, model.pretrained) or {}).get("hf_hub", "")
        except Exception:  # noqa: BLE001  (an unknown tag: a local checkpoint file)
            hub = ""
        if hub:
            names |= {hub.rstrip("/"), f"open-clip:{hub.rstrip('/')}", f"hf-hub:{hub.rstrip('/')}"}
    return names


def _checked(model: ClipModel, width: int, named: str | None, where: str, width_out: int | None = None) -> None:
    if width != model.geometry.width or width_out not in (None, width):
        raise InterpretError(f"{where} reads {width}-wide states (writes {width_out or width}); {model.label}'s "
                             f"stream is {model.geometry.width} wide: it was trained on another model.")
    if named and named not in model_names(model):
        raise InterpretError(f"{where} was trained on {named}, not on {model.label}.")


def _layer(layer: int, model: ClipModel, where: str) -> int:
    if not 0 <= layer < model.geometry.layers:
        raise InterpretError(f"{where} reads block {layer}; {model.label} has {model.geometry.layers} blocks.")
    return layer_index(layer, model.geometry.layers, model.label)


# --- SAELens ------------------------------------------------------------------------------------------------------

def save_saelens(dictionary: Dictionary, folder: str | Path, model: ClipModel | None = None,
                 metadata: dict | None = None) -> Path:
    """Write `dictionary` in SAELens's format into `folder` (`cfg.json`, `sae_weights.safetensors`): it loads with
    `sae_lens.SAE.load_from_disk(folder)`."""
    from safetensors.torch import save_file

    config = dictionary.config
    if config.tokens != "all":
        raise InterpretError("This dictionary reads the patches alone; SAELens's format has no word for that.")
    folded = dictionary.folded()
    activation = config.activation
    state = {name: tensor.detach().float().contiguous() for name, tensor in folded.state_dict().items()}
    if activation == "topk" and config.kind == "transcoder":  # SAELens has no TopK transcoder: JumpReLU
        activation = "jumprelu"
        state["threshold"] = torch.full((config.features,), float(config.threshold or 0.0))
    if config.normalisation not in ("none", "scale", "layer_norm", "constant_norm_rescale"):
        raise InterpretError(f"A dictionary normalising with '{config.normalisation}' cannot be written for SAELens.")
    architecture = next(name for name, (kind, act, skip) in SAELENS_ARCHITECTURES.items()
                        if (kind, act, skip) == (config.kind, activation, config.skip))
    hook, hook_out = hook_names(config.kind, config.layer)
    extra = {"hook_name": hook, "model_name": model.label if model else None, "context_size": None,
             "prepend_bos": False, "model_class_name": "interpret", "interpret": {
                 "tokens": config.tokens, "source": config.source, "weights_sha256":
                 model.weights_hash if model else None, "activation": config.activation, "k": config.k}}
    if config.kind == "transcoder":
        extra["hook_name_out"] = hook_out
    cfg = {"architecture": architecture, "d_in": config.width, "d_sae": config.features, "dtype": "float32",
           "device": "cpu", "apply_b_dec_to_input": bool(config.subtract_decoder_bias),
           "normalize_activations": folded.config.normalisation, "reshape_activations": "none",
           "metadata": {**extra, **(metadata or {})}}
    if config.kind == "transcoder":
        cfg["d_out"] = config.width
    if architecture == "topk":
        cfg.update(k=config.k, rescale_acts_by_decoder_norm=False)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / SAELENS_WEIGHTS))
    write_json_atomic(folder / SAELENS_CONFIG, cfg)
    return folder


def load_saelens(folder: Path, model: ClipModel) -> Dictionary:
    """A dictionary in SAELens's format (see the module), checked against `model`."""
    from safetensors.torch import load_file

    try:
        cfg = json.loads((folder / SAELENS_CONFIG).read_text())
        state = load_file(str(folder / SAELENS_WEIGHTS))
    except (OSError, ValueError) as error:
        raise InterpretError(f"{folder} holds no SAELens dictionary that can be read ({str(error)[:200]}).") from None
    try:
        return _saelens_dictionary(cfg, state, model)
    except InterpretError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as error:  # a field of the wrong type
        raise InterpretError(f"{folder / SAELENS_CONFIG} cannot be read as SAELens's: {type(error).__name__}: "
                             f"{str(error)[:200]}") from None


def _saelens_dictionary(cfg: dict, state: dict, model: ClipModel) -> Dictionary:
    where = "This SAELens dictionary"
    if not isinstance(cfg, dict) or not isinstance(cfg.get("metadata", {}), dict):
        raise InterpretError(f"{where}'s cfg.json is not a JSON object with a metadata object.")
    metadata = cfg.get("metadata") or {}
    architecture = cfg.get("architecture", "standard")
    if architecture not in SAELENS_ARCHITECTURES:
        raise InterpretError(f"{where}'s architecture '{architecture}' is not read here "
                             f"({', '.join(SAELENS_ARCHITECTURES)}).")
    kind, activation, skip = SAELENS_ARCHITECTURES[architecture]
    hooked, layer = kind_of_hooks(metadata.get("hook_name") or cfg.get("hook_name"),
                                  metadata.get("hook_name_out") or cfg.get("hook_name_out"), where)
    if hooked != kind:
        raise InterpretError(f"{where} is a '{architecture}' but reads {metadata.get('hook_name')}.")
    normalisation = cfg.get("normalize_activations", "none")
    if normalisation not in ("none", "layer_norm", "constant_norm_rescale") or (
            kind == "transcoder" and normalisation != "none"):
        raise InterpretError(f"{where} normalises its input with '{normalisation}', not read here"
                             + (" for a transcoder" if kind == "transcoder" else "") + ".")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise InterpretError(f"{where} rescales its activations by its decoder's norms, not read here.")
    if not {"W_enc", "W_dec", "b_enc", "b_dec"} <= set(state):
        raise InterpretError(f"{where} does not hold W_enc, W_dec, b_enc and b_dec.")
    width, features = int(cfg.get("d_in", state["W_enc"].shape[0])), int(cfg.get("d_sae", state["W_enc"].shape[1]))
    _checked(model, width, metadata.get("model_name") or cfg.get("model_name"), where,
             int(cfg["d_out"]) if "d_out" in cfg else None)
    if tuple(state["W_enc"].shape) != (width, features):
        raise InterpretError(f"{where}'s W_enc is {tuple(state['W_enc'].shape)}, not d_in x d_sae.")
    ours = metadata.get("interpret") or {}
    dictionary = Dictionary(DictionaryConfig(
        width, features, _layer(layer, model, where), activation, int(cfg.get("k", ours.get("k", 32))),
        bool(cfg.get("apply_b_dec_to_input", kind == "sae")) and kind == "sae", normalisation, 1.0, "all",
        ours.get("source", "SAELens"), kind, None, skip))
    wanted = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"W_skip"} if skip else set()) | (
        {"threshold"} if activation == "jumprelu" else set())
    if activation == "jumprelu" and "threshold" not in state and "log_threshold" in state:
        state["threshold"] = state["log_threshold"].exp()
    missing = wanted - set(state)
    if missing:
        raise InterpretError(f"{where} ('{architecture}') lacks {', '.join(sorted(missing))}.")
    try:
        dictionary.load_state_dict({name: state[name].float() for name in wanted})
    except RuntimeError as error:
        raise InterpretError(f"{where}'s weights do not have the shapes its cfg.json says ({str(error)[:200]}).") \
            from None
    return dictionary.eval()


# --- ViT-Prisma and saev ------------------------------------------------------------------------------------------

def _state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (pickled objects, a damaged file)
        raise InterpretError(f"{path.name} could not be read as plain tensors ({str(error)[:200]}).") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not {"W_enc", "W_dec", "b_enc", "b_dec"} <= set(state):
        raise InterpretError(f"{path.name} does not hold W_enc, W_dec, b_enc and b_dec.")
    return state


def load_prisma(folder: Path, model: ClipModel) -> Dictionary:
    """ViT-Prisma's SAE or transcoder (`weights.pt` + `config.json`)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise InterpretError(f"{folder / 'config.json'} cannot be read ({error}).") from None
    transcoder = bool(config.get("is_transcoder"))
    where = f"This ViT-Prisma {'transcoder' if transcoder else 'SAE'}"
    layer = config.get("hook_point_layer")
    layer = layer[0] if isinstance(layer, list) and len(layer) == 1 else layer
    hook = config.get("hook_point") or f"blocks.{layer}.{config.get('layer_subtype', 'hook_resid_post')}"
    hook_out = None
    if transcoder:
        out_layer = config.get("out_hook_point_layer", layer)
        hook_out = config.get("out_hook_point") or f"blocks.{out_layer}.{config.get('layer_out_subtype', 'hook_mlp_out')}"
    kind, read_layer = kind_of_hooks(hook, hook_out, where)
    if kind != ("transcoder" if transcoder else "sae") or (isinstance(layer, int) and layer != read_layer):
        raise InterpretError(f"{where} reads {hook}: it does not say the same thing twice.")
    if config.get("cls_token_only") or config.get("hook_point_head_index") is not None:
        raise InterpretError(f"{where} reads the class token alone (or one head); only dictionaries of every "
                             "token or of the patches are read here.")
    state = _state_dict(folder / "weights.pt")
    width = int(config.get("d_in", state["W_enc"].shape[0]))
    _checked(model, width, config.get("model_name"), where, int(config["d_out"]) if transcoder and "d_out" in
             config else None)
    activation = config.get("activation_fn_str", "relu")
    if activation not in ("relu", "topk"):
        raise InterpretError(f"{where}'s activation '{activation}' is not read here (relu, topk).")
    normalisation = config.get("normalize_activations") or "none"
    if normalisation not in ("none", "layer_norm", "constant_norm_rescale") or (
            transcoder and normalisation != "none"):
        raise InterpretError(f"{where} normalises its input with '{normalisation}', not read here.")
    skip = transcoder and state.get("W_skip") is not None
    dictionary = Dictionary(DictionaryConfig(
        width, int(state["W_enc"].shape[1]), _layer(read_layer, model, where), activation,
        int((config.get("activation_fn_kwargs") or {}).get("k", 32)), not transcoder, normalisation, 1.0,
        "patches" if config.get("use_patches_only") else "all", "ViT-Prisma", kind, None, skip))
    weights = {name: state[name].float() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if transcoder:  # their encoder reads (x - b_dec) with b_dec in the input's space, their output bias b_dec_out
        if "b_dec_out" not in state:
            raise InterpretError(f"{where} lacks b_dec_out.")
        weights["b_enc"] = weights["b_enc"] - weights["b_dec"] @ weights["W_enc"]
        weights["b_dec"] = state["b_dec_out"].float()
        if skip:
            weights["W_skip"] = state["W_skip"].float()
    dictionary.load_state_dict(weights)
    return dictionary.eval()


def load_saev(checkpoint: Path, folder: Path, model: ClipModel, layer: int | None) -> Dictionary:
    """saev's SAE (`sae.pt`: a JSON header line, then tensors; its layer from `config.json` beside it)."""
    try:
        with checkpoint.open("rb") as stream:
            header = json.loads(stream.readline())
            payload = stream.read()
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise InterpretError(f"{checkpoint.name} is not a saev checkpoint (a JSON header line, then tensors): "
                             f"{str(error)[:200]}") from None
    config = header.get("cfg", header)
    width = int(config.get("d_model", config.get("d_vit", state["W_enc"].shape[0])))
    activation = config.get("activation", {})
    key = activation.get("key", "relu") if isinstance(activation, dict) else str(header.get("cls", "relu")).lower()
    if key not in ("top-k", "topk", "relu"):
        raise InterpretError(f"This saev SAE's activation '{key}' is not read here (top-k, relu).")
    training = {}
    if (folder / "config.json").is_file():
        try:
            training = json.loads((folder / "config.json").read_text()).get("train_data", {})
        except (OSError, ValueError):
            training = {}
    trained_layer = training.get("layer")
    if trained_layer is not None and layer is not None and trained_layer != layer:
        raise InterpretError(f"This saev SAE was trained on layer {trained_layer}, not {layer}.")
    chosen = trained_layer if trained_layer is not None else layer
    if not isinstance(chosen, int):
        raise InterpretError("This saev checkpoint does not say its layer (no config.json beside it with "
                             "train_data.layer): give the layer it was trained on.")
    if training.get("tokens", "content") == "special":
        raise InterpretError("This saev SAE reads the special tokens (the class token) alone; not read here.")
    _checked(model, width, None, "This saev SAE")
    dictionary = Dictionary(DictionaryConfig(
        width, int(state["W_enc"].shape[1]), layer_index(chosen, model.geometry.layers, model.label),
        "topk" if key in ("top-k", "topk") else "relu", int(activation.get("top_k", 32)) if isinstance(
            activation, dict) else 32, False, "none", 1.0, "all" if training.get("tokens") == "all" else "patches",
        "saev"))
    dictionary.load_state_dict({name: state[name].float() for name in ("W_enc", "b_enc", "W_dec", "b_dec")})
    return dictionary.eval()


def load_pretrained(source: str | Path, model: ClipModel, layer: int | None = None) -> Dictionary:
    """A dictionary trained elsewhere, from a local folder or `hf://ORG/REPO[/SUBFOLDER]` (fetched with
    huggingface_hub into the cache under INTERPRET_HOME): SAELens's (`cfg.json` + `sae_weights.safetensors`: SAEs
    and transcoders), ViT-Prisma's (`weights.pt` + `config.json`: SAEs of `blocks.L.hook_resid_post`, transcoders of
    an MLP) or saev's (`sae.pt`; its layer from `config.json` beside it (`train_data.layer`) or from `layer`).
    Refused with a message when it reads another hook, another model, another width or other tokens (the class
    token alone)."""
    folder = _fetched(str(source))
    if (folder / SAELENS_CONFIG).is_file() and (folder / SAELENS_WEIGHTS).is_file():
        return load_saelens(folder, model)
    if (folder / "weights.pt").is_file() and (folder / "config.json").is_file():
        return load_prisma(folder, model)
    checkpoint = folder / "sae.pt" if (folder / "sae.pt").is_file() else None
    if checkpoint is None and folder.is_file() and folder.suffix == ".pt":
        checkpoint, folder = folder, folder.parent
    if checkpoint is not None:
        return load_saev(checkpoint, folder, model, layer)
    raise InterpretError(f"{source} holds no dictionary this app reads: SAELens's cfg.json with "
                         "sae_weights.safetensors, ViT-Prisma's weights.pt with config.json, or saev's sae.pt.")


def _fetched(source: str) -> Path:
    if not source.startswith("hf://"):
        path = Path(source)
        if not path.exists():
            raise InterpretError(f"No dictionary at {source}.")
        return path
    from huggingface_hub import snapshot_download

    from ..paths import home

    parts = source.removeprefix("hf://").strip("/").split("/")
    if len(parts) < 2:
        raise InterpretError(f"A dictionary on the hub is hf://ORG/REPO[/SUBFOLDER], not {source}.")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        local = snapshot_download(repo, allow_patterns=[f"{sub}/*" if sub else "*"], cache_dir=home() / "hub")
    except Exception as error:  # noqa: BLE001  (no network, no such repository)
        raise InterpretError(f"Could not fetch {source} from the Hugging Face hub: {error}") from None
    return Path(local) / sub
