"""What a retrain trains: the champion's own recipe, the model's data source, and what the caller asked for.

A drift event names only the model. Everything else is looked up per model, first match wins:

============================  ==============  ======================  ===================  =========================
what                          1               2                       3                    4
============================  ==============  ======================  ===================  =========================
target column                 ``target``      ``models.<m>.target``   champion's recipe    ``data.target`` if
                              parameter                                                    ``name`` is ``m`` or unset
task, estimator, its params,  ``overrides``   champion's recipe       edgeops.yaml's
scaling, missing token        parameter                               ``model`` section
data                          ``data``        ``models.<m>.data``     champion's recipe
                              parameter       or ``.sql``             source
============================  ==============  ======================  ===================  =========================

Why the champion before edgeops.yaml's top-level sections: one edgeops.yaml serves every model of a project,
and its ``model``/``data`` sections describe the model that ``name`` trains by hand. A drift of another model
must not retrain with them (a churn drift once retrained "churn" on the wine target and the newest wine CSV). A
release records its recipe (pipeline.training_recipe) with the task and estimator *as trained* (an inferred
task, a default estimator), so a retrain repeats exactly that; a new recipe enters through a pipeline run.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeops.config import ModelSource, ProjectConfig
from edgeops.credentials import read_secret
from edgeops.errors import ConfigError
from edgeops.release.registry import ReleaseRecord

RECIPE_MODEL_KEYS: tuple[str, ...] = ("task", "estimator", "params", "scale_numeric", "missing_token")


@dataclass(frozen=True)
class Recipe:
    """How to retrain ``model``: the pipeline's target and dotted config overrides, the data source, and where
    each of them came from (for the log and the summary artifact)."""

    model: str
    target: str
    source: ModelSource
    overrides: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return ", ".join(f"{what} from {where}" for what, where in self.origin.items())


def champion_recipe(record: ReleaseRecord | None) -> dict[str, Any]:
    """The recipe a release recorded ({} for none, or for releases registered before recipes were kept)."""
    recipe = None if record is None else record.report.get("recipe")
    return dict(recipe) if isinstance(recipe, dict) else {}


def resolve_recipe(model: str, cfg: ProjectConfig, champion: ReleaseRecord | None, *, data: str | None = None,
                   target: str | None = None, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """The recipe by the table of the module doc. ConfigError naming the key to set when the target or the data
    source is known nowhere."""
    recorded = champion_recipe(champion)
    entry = cfg.models.get(model, ModelSource())
    champ = "champion" if champion is None else f"champion {champion.ref}"
    origin: dict[str, str] = {}

    targets = [(target, "the target parameter"), (entry.target, f"models.{model}.target"),
               (recorded.get("target"), champ),
               (cfg.data.target if cfg.name in (None, model) else None, "data.target")]
    chosen_target = _first(targets, origin, "target")
    if chosen_target is None:
        raise ConfigError(f"models.{model}.target", f"no target column for model {model!r}: its champion recorded "
                          f"none (registered before releases kept their recipe, or no champion yet); set "
                          f"models.{model}.target in edgeops.yaml or pass target")

    recorded_source = ModelSource.from_json(recorded.get("source"))
    sources = [(ModelSource(data=data) if data else None, "the data parameter"),
               (entry if entry.is_set else None, f"models.{model}"), (recorded_source, champ)]
    source = _first(sources, origin, "data")
    if source is None:
        raise ConfigError(f"models.{model}.data", f"no data source for model {model!r}: set models.{model}.data "
                          f"(a file, folder or glob) or models.{model}.sql in edgeops.yaml, or pass data")

    pinned = {f"model.{k}": recorded[k] for k in RECIPE_MODEL_KEYS if k in recorded}
    if pinned:
        origin["task and estimator"] = champ
    merged = {**pinned, **dict(overrides or {})}
    return Recipe(model=model, target=str(chosen_target), source=source, overrides=merged, origin=origin)


def database_url(source: ModelSource, model: str) -> str | None:
    """The URL a ``sql`` source runs on: its Secret block's value, else ``database_url`` (None for files)."""
    if source.sql is None:
        return None
    url = read_secret(source.database_url_secret, None, f"models.{model}.database_url_secret")
    return url or source.database_url


def _first(options: list[tuple[Any, str]], origin: dict[str, str], what: str) -> Any:
    for value, where in options:
        if value is not None:
            origin[what] = where
            return value
    return None


__all__ = ["RECIPE_MODEL_KEYS", "Recipe", "champion_recipe", "database_url", "resolve_recipe"]
