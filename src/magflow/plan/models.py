"""The models of a workflow: the pretraining runs, the external baselines, each run's ``{run}~init`` control,
and the models of the MAD evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from magflow.embed.control import CONTROL_KEY, control_name
from magflow.embed.external import ExternalModel, external_models
from magflow.errors import ConfigError
from magflow.evaluate.mad_eval import MadEvalSettings, check_mad_scales
from magflow.plan.slides import require_tileset


@dataclass(frozen=True)
class ModelPlan:
    """Every value of the {model} wildcard and where each comes from."""

    runs: list[str]                          # the pretraining runs, in the runs sheet's order
    external: dict[str, ExternalModel]       # embed.external, resolved (every file local)
    external_settings: Mapping[str, Mapping[str, Any]]
    controls: dict[str, str]                 # control name -> its run

    @property
    def embed_models(self) -> list[str]:
        """The runs, then the external baselines: the models with every evaluation."""
        return self.runs + list(self.external)

    @property
    def names(self) -> list[str]:
        """The embed models and the controls: every value of the {model} wildcard."""
        return self.embed_models + list(self.controls)

    def control(self, model: str) -> str | None:
        """The control of a run (None for an external baseline or a control)."""
        name = control_name(model)
        return name if name in self.controls else None

    def source(self, model: str) -> str | dict[str, Any]:
        """A run's model directory, a control's run, or an external baseline's settings (magflow.embed.model_source)."""
        if model in self.external:
            return dict(self.external_settings[model])
        if model in self.controls:
            return {CONTROL_KEY: f"results/models/{self.controls[model]}"}
        return f"results/models/{model}"

    def files(self, model: str) -> dict[str, Any]:
        """The files embedding with ``model`` reads: an external model's config and weights, a control's run card
        (its training config and seed), a run's teacher weights and card."""
        if model in self.external:
            return {"weights": self.external[model].resolve().files}
        if model in self.controls:
            return {"card": f"results/models/{self.controls[model]}/model_card.json"}
        return {"weights": f"results/models/{model}/teacher_backbone.safetensors",
                "card": f"results/models/{model}/model_card.json"}


def plan_models(config: Mapping[str, Any], runs: Sequence[str]) -> ModelPlan:
    """The models of ``runs`` and embed.external; an external model named like a run or a run's control is refused."""
    external_settings = config["embed"]["external"] or {}
    external = external_models(external_settings)  # refuses a model whose files are not all local
    require_tileset(config, "embed.tileset")
    clash = sorted(set(external) & set(runs))
    if clash:
        raise ConfigError(f"embed.external: {', '.join(clash)} is also the name of a pretraining run; rename it")
    # {run}~init: the run's network at initialisation (same architecture and seed), rebuilt from its model card
    controls = {control_name(run): run for run in runs}
    clash = sorted(set(external) & set(controls))
    if clash:
        raise ConfigError(f"embed.external: {', '.join(clash)} is the name of a run's init control; rename it")
    return ModelPlan(list(runs), external, dict(external_settings), controls)


def resample_warning(config: Mapping[str, Any]) -> str | None:
    """Why embed.resample `finest` will skip the coarse mpps (the finest scale's tiles too small), or None."""
    embed = config["embed"]
    tiles = config["tilesets"][embed["tileset"]]
    window = round(tiles["cell_px"] * max(embed["mpps"]) / min(tiles["scales"]))
    if embed["resample"] != "finest" or tiles["source_px"] >= window:
        return None
    return (f"embed.resample 'finest' cuts the {max(embed['mpps']):g} mpp view as a {window} px window of "
            f"the {min(tiles['scales']):g} mpp scale, but tilesets.{embed['tileset']}.source_px is "
            f"{tiles['source_px']}: the coarse mpps will be skipped. Give that tile set source_px >= "
            f"{window}, or set embed.resample: nearest_scale.")


@dataclass(frozen=True)
class MadPlan:
    """The MAD paper's evaluation: its settings, the slides with a label mask, the models (none: no evaluation)."""

    settings: MadEvalSettings
    slides: list[str]
    models: list[str]


def mad_models(models: ModelPlan, mad_runs: Sequence[str], max_models: int | None) -> list[str]:
    """MAD runs first (the paper's), then the other runs and the external models, ``max_models`` of them
    (None: all), each run followed by its control."""
    order = ([r for r in models.runs if r in mad_runs] + [r for r in models.runs if r not in mad_runs]
             + list(models.external))
    chosen = order if max_models is None else order[:max_models]
    return [m for model in chosen for m in (model, models.control(model)) if m is not None]


def plan_mad(config: Mapping[str, Any], models: ModelPlan, mad_runs: Sequence[str],
             masks: Mapping[str, str]) -> MadPlan:
    """evaluate.mad checked; on when the tile set it names is configured (a project with only a train tile set has
    none) and max_models != 0. Only slides with a label mask: every score reads labelled tiles, so a slide
    without one would be embedded for nothing; without any, there is no MAD evaluation."""
    settings = MadEvalSettings.from_config(config["evaluate"].get("mad"))
    on = settings.max_models != 0 and settings.tileset in config["tilesets"]
    if on:
        check_mad_scales(sorted(config["tilesets"][settings.tileset]["scales"], reverse=True),
                         f"tilesets.{settings.tileset}.scales")
    slides = list(masks)
    return MadPlan(settings, slides, mad_models(models, mad_runs, settings.max_models) if slides and on else [])
