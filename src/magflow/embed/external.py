"""External models as config, in the formats people have them, checked before any job.

An entry of ``embed.external`` is one of four sources (its *format*):

- ``timm-weights``: a timm architecture name (``timm_name: vit_large_patch16_224``) and a local weights
  file (``weights:``); timm builds the model with ``pretrained=False`` and the file is loaded into it.
- ``local-dir``: ``timm_name: local-dir:PATH``, timm's own folder format: ``config.json`` (``architecture``,
  ``model_args``, ``pretrained_cfg``) beside ``model.safetensors`` or ``pytorch_model.bin``. A magflow run
  writes one as ``results/models/{run}/timm/`` (see :mod:`magflow.pretrain.export`).
- ``hf-hub``: ``timm_name: hf-hub:ORG/NAME[@REVISION]``, a Hugging Face Hub model resolved only from the
  local Hugging Face cache, never downloaded: the cache's snapshot folder is loaded as a ``local-dir``. The
  cache folder is ``hf_cache`` when given, else ``HF_HUB_CACHE``, ``HF_HOME``/hub,
  ``XDG_CACHE_HOME``/huggingface/hub or ``~/.cache/huggingface/hub``, read when the config is parsed.
- ``release``: ``release: FOLDER``, the continuous-magnification authors' release: ``config.json`` with
  ``architecture`` and ``img_size`` beside ``{release_model}.safetensors`` (``release_model`` may be left
  out when the folder holds one ``.safetensors`` file); built as ``timm.create_model(architecture,
  img_size=img_size)`` and loaded from that file.

Per model: ``timm_kwargs`` (class-valued ones by name, see :mod:`magflow.embed.encoder`), ``img_size``,
``mean``/``std`` (default: the folder's ``pretrained_cfg`` where it has one, else ImageNet), and
``feature``: ``pooled`` (``model(x)`` of the timm model with ``num_classes=0``, the benchmark papers'
protocol), ``cls`` or ``cls+mean_patch`` (null: ``cls``, or ``cls+mean_patch`` when ``embed.mean_patch``
is on, as for the runs; a model that is not a ViT gives ``pooled``).

Resolving a model needs neither torch nor timm, so the workflow refuses a model with a missing file or
folder while it parses the config, naming ``embed.external.<name>.<key>`` and the path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from magflow.embed.control import CONTROL_KEY, InitControl
from magflow.errors import ConfigError
from magflow.imagenet import IMAGENET_MEAN, IMAGENET_STD

FORMATS = ("timm-weights", "local-dir", "hf-hub", "release")
FEATURES = ("pooled", "cls", "cls+mean_patch")
KEYS = ("timm_name", "weights", "img_size", "timm_kwargs", "mean", "std", "feature", "release", "release_model",
        "hf_cache")
LOCAL_DIR, HF_HUB = "local-dir:", ("hf-hub:", "hf_hub:")
# The weights file timm's local-dir loader takes from a folder: the first of these names, else the first file
# (sorted) of the first extension that has one.
PREFERRED_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
                     "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors")
WEIGHT_EXTENSIONS = (".safetensors", ".pth", ".pth.tar", ".bin")


@dataclass(frozen=True)
class ModelFiles:
    """Where an external model's files are, resolved from its config (see :meth:`ExternalModel.resolve`)."""

    format: str                          # one of FORMATS
    architecture: str                    # what timm.create_model gets (a registry name, or local-dir:FOLDER)
    weights: Path                        # the weights file that is loaded
    folder: Path | None = None           # local-dir / hf-hub snapshot / release folder
    config: Mapping[str, Any] = field(default_factory=dict)  # the folder's config.json
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    normalisation_from: Mapping[str, str] = field(default_factory=dict)  # mean/std → where from
    img_size: int | None = None          # the size the model is built for (None: the folder's own)
    location: str = ""                   # as the config names it: the file, the folder or ORG/NAME
    revision: str | None = None          # hf-hub: the cached snapshot's commit
    hf_cache: str | None = None          # hf-hub: the cache folder it was found in
    hf_cache_from: str | None = None     # ... and where that folder came from

    @property
    def files(self) -> list[str]:
        """The local files the model is loaded from (the workflow's inputs)."""
        config = [str(self.folder / "config.json")] if self.folder is not None else []
        return config + [str(self.weights)]

    def record(self) -> dict[str, Any]:
        """The source as recorded in the embeddings' model card."""
        out: dict[str, Any] = {"format": self.format, "location": self.location,
                               "weights": {"file": self.weights.name, "bytes": self.weights.stat().st_size}}
        if self.format == "hf-hub":
            out |= {"revision": self.revision, "hf_cache": self.hf_cache, "hf_cache_from": self.hf_cache_from,
                    "network": "off: resolved from the local cache only"}
        if self.folder is not None:
            out["config"] = dict(self.config)
        return out


@dataclass(frozen=True)
class ExternalModel:
    """An external model by name, e.g. ``ExternalModel("uni", "vit_large_patch16_224", "weights/uni.bin",
    timm_kwargs={"init_values": 1e-5})`` or ``ExternalModel("mine", "local-dir:results/models/run/timm")``."""

    name: str
    timm_name: str | None = None
    weights: str | None = None
    img_size: int | None = None
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    feature: str | None = None
    release: str | None = None
    release_model: str | None = None
    hf_cache: str | None = None

    @classmethod
    def from_config(cls, name: str, settings: Mapping[str, Any]) -> ExternalModel:
        """The settings of ``embed.external.<name>``, checked: the keys, and that every file is there."""
        unknown = sorted(set(settings) - set(KEYS))
        if unknown:
            raise ConfigError(f"embed.external.{name}: unknown key(s) {unknown}; allowed {sorted(KEYS)}")
        model = cls(name=name, **settings)
        model.resolve()
        return model

    @property
    def format(self) -> str:
        if self.release is not None:
            return "release"
        if self.timm_name and self.timm_name.startswith(LOCAL_DIR):
            return "local-dir"
        if self.timm_name and self.timm_name.startswith(HF_HUB):
            return "hf-hub"
        return "timm-weights"

    def key(self, key: str) -> str:
        return f"embed.external.{self.name}.{key}"

    def resolve(self) -> ModelFiles:
        """The model's files and normalisation; a :class:`ConfigError` naming the key and path when one is missing."""
        self._check_settings()
        fmt = self.format
        if fmt == "timm-weights":
            files = self._timm_weights()
        elif fmt == "release":
            files = self._release()
        else:
            folder, extra = (self._hf_snapshot() if fmt == "hf-hub"
                             else (Path(self.timm_name[len(LOCAL_DIR):]).expanduser(), {}))
            files = self._timm_folder(fmt, folder, extra)
        return self._normalised(files)

    # -- checks of the settings themselves --------------------------------------------------------------------
    def _check_settings(self) -> None:
        fmt = self.format
        if fmt == "release":
            if self.timm_name is not None or self.weights is not None:
                raise ConfigError(f"{self.key('release')}: a release folder names its architecture (config.json) "
                                  "and weights ({release_model}.safetensors); leave out timm_name and weights")
        elif not self.timm_name:
            raise ConfigError(f"embed.external.{self.name}: give `timm_name` (a timm architecture with `weights`, "
                              "local-dir:FOLDER or hf-hub:ORG/NAME) or `release` (an authors' release folder)")
        elif fmt != "timm-weights" and self.weights is not None:
            raise ConfigError(f"{self.key('weights')}: a {fmt} model's weights come from its folder; leave out "
                              "`weights`")
        if self.release_model is not None and fmt != "release":
            raise ConfigError(f"{self.key('release_model')}: only for a `release` folder")
        if self.hf_cache is not None and fmt != "hf-hub":
            raise ConfigError(f"{self.key('hf_cache')}: only for an hf-hub:ORG/NAME model")
        if self.feature is not None and self.feature not in FEATURES:
            raise ConfigError(f"{self.key('feature')}: '{self.feature}' is not one of {', '.join(FEATURES)}")
        if self.img_size is not None and (not isinstance(self.img_size, int) or self.img_size < 1):
            raise ConfigError(f"{self.key('img_size')}: must be a positive integer, got {self.img_size!r}")
        if not isinstance(self.timm_kwargs, Mapping):
            raise ConfigError(f"{self.key('timm_kwargs')}: must be a mapping of timm.create_model arguments")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, str) or len(value) != 3
                                      or not all(isinstance(v, (int, float)) for v in value)):
                raise ConfigError(f"{self.key(key)}: three numbers (R, G, B), got {value!r}")
        if self.std is not None and min(self.std) <= 0:
            raise ConfigError(f"{self.key('std')}: must be positive, got {list(self.std)}")

    # -- the four formats -------------------------------------------------------------------------------------
    def _timm_weights(self) -> ModelFiles:
        if not self.weights:
            raise ConfigError(f"{self.key('weights')}: must name a local weights file; magflow never downloads "
                              "weights (timm pretrained=False). Download them yourself and set `weights:` to the "
                              "file, or name a local-dir:FOLDER / hf-hub:ORG/NAME model in the local cache")
        weights = Path(self.weights).expanduser()
        if not weights.is_file():
            raise ConfigError(f"{self.key('weights')}: weights file {weights} does not exist; fix the path")
        return ModelFiles("timm-weights", str(self.timm_name), weights, img_size=self.img_size or 224,
                          location=str(weights))

    def _timm_folder(self, fmt: str, folder: Path, extra: dict[str, Any]) -> ModelFiles:
        where = self.key("timm_name")
        config = _read_config(folder, where, "timm's local-dir format: config.json with `architecture`, "
                                             "`model_args` and `pretrained_cfg`, beside model.safetensors")
        if not isinstance(config.get("architecture"), str):
            raise ConfigError(f"{where}: {folder / 'config.json'} has no `architecture` (the timm model name)")
        weights = folder_weights(folder)
        if weights is None:
            raise ConfigError(f"{where}: {folder} holds no weights file ({', '.join(PREFERRED_WEIGHTS[:2])} or "
                              f"any {', '.join(WEIGHT_EXTENSIONS)} file)")
        location = extra.pop("location", str(folder))
        return ModelFiles(fmt, f"{LOCAL_DIR}{folder}", weights, folder, config, img_size=self.img_size,
                          location=location, **extra)

    def _hf_snapshot(self) -> tuple[Path, dict[str, Any]]:
        """The cache's snapshot folder of ``hf-hub:ORG/NAME[@REVISION]``, found without any network access."""
        from huggingface_hub import try_to_load_from_cache  # local only: it reads the cache folder

        repo = self.timm_name.split(":", 1)[1]
        repo_id, _, revision = repo.partition("@")
        cache, cache_from = hf_cache_dir(self.hf_cache, self.key("hf_cache"))
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(cache), revision=revision or None)
        if not isinstance(found, str):
            folder = "models--" + repo_id.replace("/", "--")
            raise ConfigError(
                f"{self.key('timm_name')}: {repo_id} (revision {revision or 'main'}) is not in the local Hugging "
                f"Face cache {cache} (from {cache_from}): no {folder}/snapshots/<commit>/config.json there. magflow "
                "never downloads models and runs with the network off: fetch it once yourself (e.g. `hf download "
                f"{repo_id} --cache-dir {cache}`), or point {self.key('hf_cache')} (or HF_HUB_CACHE) at the cache "
                "folder that holds it")
        snapshot = Path(found).parent
        return snapshot, {"location": repo, "revision": snapshot.name, "hf_cache": str(cache),
                          "hf_cache_from": cache_from}

    def _release(self) -> ModelFiles:
        folder = Path(self.release).expanduser()
        where = self.key("release")
        config = _read_config(folder, where, "the authors' release format: config.json with `architecture` and "
                                             "`img_size`, beside {name}.safetensors")
        missing = [k for k in ("architecture", "img_size") if k not in config]
        if missing:
            raise ConfigError(f"{where}: {folder / 'config.json'} lacks {', '.join(missing)}")
        if self.release_model is not None:
            weights = folder / f"{self.release_model}.safetensors"
            if not weights.is_file():
                raise ConfigError(f"{self.key('release_model')}: {weights} does not exist; the release folder "
                                  f"holds {sorted(p.name for p in folder.glob('*.safetensors'))}")
        else:
            candidates = sorted(folder.glob("*.safetensors"))
            if len(candidates) != 1:
                raise ConfigError(f"{where}: {folder} holds {len(candidates)} .safetensors files "
                                  f"{[p.name for p in candidates]}; name one with {self.key('release_model')}")
            weights = candidates[0]
        return ModelFiles("release", str(config["architecture"]), weights, folder, config,
                          img_size=self.img_size or int(config["img_size"]), location=str(folder))

    def _normalised(self, files: ModelFiles) -> ModelFiles:
        """``mean`` and ``std`` each from the config entry, else the folder's pretrained_cfg (or the release's
        config.json), else ImageNet; each recorded with where it came from."""
        cfg = files.config.get("pretrained_cfg", files.config) if files.config else {}
        folder = "config.json pretrained_cfg" if "pretrained_cfg" in files.config else "config.json"
        values, sources = {}, {}
        for key, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
            if getattr(self, key) is not None:
                values[key], sources[key] = getattr(self, key), self.key(key)
            elif isinstance(cfg, Mapping) and cfg.get(key) is not None:
                values[key], sources[key] = cfg[key], folder
            else:
                values[key], sources[key] = default, "ImageNet (default)"
        return replace(files, mean=tuple(float(v) for v in values["mean"]),
                       std=tuple(float(v) for v in values["std"]), normalisation_from=sources)


def _read_config(folder: Path, where: str, layout: str) -> dict[str, Any]:
    if not folder.is_dir():
        raise ConfigError(f"{where}: folder {folder} does not exist; expected {layout}")
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"{where}: {path} does not exist; expected {layout}")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{where}: {path} is not readable JSON ({error})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: {path} must hold a JSON object")
    return config


def folder_weights(folder: Path) -> Path | None:
    """The weights file timm's local-dir loader reads from ``folder``, or None."""
    for name in PREFERRED_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    for ext in WEIGHT_EXTENSIONS:
        found = sorted(p for p in folder.glob(f"*{ext}") if p.is_file())
        if found:
            return found[0]
    return None


def hf_cache_dir(explicit: str | None = None, key: str = "hf_cache") -> tuple[Path, str]:
    """The Hugging Face hub cache folder and where it came from: ``explicit``, else the environment as
    huggingface_hub reads it (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub,
    ~/.cache/huggingface/hub), read now rather than when huggingface_hub was imported."""
    if explicit:
        return Path(explicit).expanduser(), key
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser(), var
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub", "HF_HOME"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub", "XDG_CACHE_HOME"
    return Path("~/.cache/huggingface/hub").expanduser(), "the default (~/.cache/huggingface/hub)"


def external_models(settings: Mapping[str, Mapping[str, Any]]) -> dict[str, ExternalModel]:
    """The config's external models by name, each resolved: a missing file or folder is refused up front."""
    return {name: ExternalModel.from_config(name, value) for name, value in (settings or {}).items()}


def model_source(name: str, value: str | os.PathLike[str] | Mapping[str, Any]
                 ) -> str | os.PathLike[str] | ExternalModel | InitControl:
    """A run's model directory as is, a run's control (``{"init_control_of": its directory}``) as an
    :class:`InitControl`, or an external model's settings as an :class:`ExternalModel`."""
    if isinstance(value, Mapping) and set(value) == {CONTROL_KEY}:
        return InitControl(str(value[CONTROL_KEY]))
    return ExternalModel.from_config(name, value) if isinstance(value, Mapping) else value
