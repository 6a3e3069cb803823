"""What a retrain trains and when: the recipe table of edgeops.retrain.recipe, each model's own newest data
(edgeops.train.datasource), and the cooldown that defers instead of dropping (edgeops.retrain.cooldown)."""

import os
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from edgeops.config import ModelSource, ProjectConfig
from edgeops.errors import ConfigError, DataError
from edgeops.retrain.cooldown import Decision, RetrainRun, decide, decision_time, superseded
from edgeops.retrain.recipe import resolve_recipe
from edgeops.train.datasource import materialized, newest_data

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
HOUR = 3600.0


class Champion:
    """The two things resolve_recipe reads of a registry record."""

    def __init__(self, recipe: dict[str, Any] | None, version: int = 1) -> None:
        self.report = {} if recipe is None else {"recipe": recipe}
        self.ref = f"churn@{version}"


CHURN = {"target": "churned", "task": "binary", "estimator": "sklearn.ensemble.RandomForestClassifier",
         "params": {"n_estimators": 20}, "scale_numeric": None, "missing_token": "__missing__",
         "source": {"data": "data/churn-*.csv"}}


def touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x,y\n1,2\n")
    os.utime(path, (mtime, mtime))
    return path


def test_the_newest_file_of_a_glob_is_the_models_own(tmp_path: Path) -> None:
    churn_old = touch(tmp_path / "data" / "churn-2026-10.csv", 1_000)
    churn_new = touch(tmp_path / "data" / "churn-2026-11.parquet", 2_000)
    touch(tmp_path / "data" / "wine-2026-12.csv", 3_000)  # newest in the folder, but another model's
    touch(tmp_path / "data" / "churn-notes.txt", 4_000)
    assert newest_data(tmp_path / "data" / "churn-*") == churn_new
    assert newest_data(str(tmp_path / "data" / "churn-2026-1[0]*")) == churn_old
    assert newest_data(tmp_path / "data").name == "wine-2026-12.csv"  # a folder: its newest, as before
    assert newest_data(churn_old) == churn_old
    with pytest.raises(DataError, match=r"no \.csv or \.parquet file in the glob"):
        newest_data(tmp_path / "data" / "fraud-*.csv")
    with pytest.raises(DataError, match="neither a file, a folder nor a glob"):
        newest_data(tmp_path / "nowhere.csv")


def test_a_query_becomes_a_parquet_file_for_the_run_only(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE wine (alcohol REAL, acidity REAL, quality INTEGER)")
        conn.executemany("INSERT INTO wine VALUES (?, ?, ?)", [(9.5 + i / 10, 0.3, i % 3) for i in range(40)])
    source = ModelSource(sql="SELECT alcohol, quality FROM wine WHERE acidity < 1", database_url=f"sqlite:///{db}")
    with materialized(source, source.database_url) as path:
        df = pd.read_parquet(path)
        assert list(df.columns) == ["alcohol", "quality"] and len(df) == 40
    assert not path.exists() and not path.parent.exists()
    with pytest.raises(DataError, match="no such table") as info, \
            materialized(replace(source, sql="SELECT * FROM beer"), source.database_url):
        pass
    assert str(db) not in str(info.value)  # the URL may hold a password: errors name the query, not the URL
    with pytest.raises(DataError, match="no rows"), \
            materialized(replace(source, sql="SELECT * FROM wine WHERE 0"), source.database_url):
        pass


def test_a_drift_retrains_with_the_champions_recipe_not_the_projects_other_model() -> None:
    """edgeops.yaml describes the wine model (name, data.target, model.estimator); a churn drift must not use it."""
    cfg = ProjectConfig(name="wine", data=replace(ProjectConfig().data, target="quality"),
                        models={"churn": ModelSource(data="/d/churn-*.csv")})
    recipe = resolve_recipe("churn", cfg, Champion(CHURN))  # type: ignore[arg-type]
    assert recipe.target == "churned" and recipe.source.data == "/d/churn-*.csv"
    assert recipe.overrides == {"model.task": "binary", "model.estimator": "sklearn.ensemble.RandomForestClassifier",
                                "model.params": {"n_estimators": 20}, "model.scale_numeric": None,
                                "model.missing_token": "__missing__"}
    assert recipe.origin == {"target": "champion churn@1", "data": "models.churn",
                             "task and estimator": "champion churn@1"}


@pytest.mark.parametrize(("kwargs", "entry", "name", "expected"), [
    ({"target": "t-param", "data": "p.csv"}, ModelSource(data="m.csv", target="t-model"), None, ("t-param", "p.csv")),
    ({}, ModelSource(data="m.csv", target="t-model"), None, ("t-model", "m.csv")),
    ({}, ModelSource(), None, ("churned", "data/churn-*.csv")),  # nothing configured: all from the champion
    ({}, ModelSource(), "churn", ("churned", "data/churn-*.csv")),  # the champion before data.target
])
def test_recipe_precedence(kwargs: dict[str, str], entry: ModelSource, name: str | None,
                           expected: tuple[str, str]) -> None:
    cfg = ProjectConfig(name=name, data=replace(ProjectConfig().data, target="cfg-target"),
                        models={"churn": entry} if entry.is_set or entry.target else {})
    recipe = resolve_recipe("churn", cfg, Champion(CHURN), **kwargs)  # type: ignore[arg-type]
    assert (recipe.target, recipe.source.data) == expected


def test_without_a_recorded_recipe_the_config_must_say() -> None:
    """Releases registered before recipes were kept: data.target only counts for the model edgeops.yaml names."""
    old = Champion(None)
    cfg = ProjectConfig(name="wine", data=replace(ProjectConfig().data, target="quality"))
    with pytest.raises(ConfigError, match="no target column for model 'churn'") as info:
        resolve_recipe("churn", cfg, old)  # type: ignore[arg-type]
    assert info.value.key == "models.churn.target"
    with pytest.raises(ConfigError, match="no data source for model 'churn'") as info:
        resolve_recipe("churn", cfg, old, target="churned")  # type: ignore[arg-type]
    assert info.value.key == "models.churn.data"
    mine = resolve_recipe("wine", cfg, None, data="w.csv")
    assert (mine.target, mine.overrides, mine.origin["target"]) == ("quality", {}, "data.target")


def run(ident: str, status: str, created_min: float, ended_min: float | None = None) -> RetrainRun:
    return RetrainRun(ident, T0 + timedelta(minutes=created_min), status,  # type: ignore[arg-type]
                      ended=None if ended_min is None else T0 + timedelta(minutes=ended_min),
                      scheduled_for=T0 + timedelta(minutes=90) if status == "scheduled" else None)


NOW = T0 + timedelta(minutes=30)


@pytest.mark.parametrize(("runs", "action", "until_min", "because"), [
    ([], "run", None, None),
    ([run("a", "retrained", -100, -70)], "run", None, None),  # its cooldown is over
    ([run("a", "retrained", 0, 10)], "defer", 70, "a"),  # ended 20 min ago: deferred to its end + 1 h
    ([run("a", "retrained", 0, 10), run("b", "retrained", 5, 20)], "defer", 80, "b"),  # the latest end counts
    ([run("a", "other", 0, 10)], "run", None, None),  # failed or crashed: does not hold the next one back
    ([run("a", "active", 20)], "defer", 90, "a"),  # retraining right now, ahead of this run
    ([run("z", "active", 40)], "run", None, None),  # created after this run: this one goes first
    ([run("a", "active", -60 * 25)], "run", None, None),  # "running" for a day: its worker died
    ([run("s", "scheduled", 10), run("a", "retrained", 0, 10)], "already_deferred", None, "s"),
    ([run("s", "scheduled", 10), run("a", "active", 20)], "already_deferred", None, "s"),
    ([run("s", "scheduled", 10)], "run", None, None),  # a scheduled run alone holds nothing back
    ([run("me", "retrained", 0, 10)], "run", None, None),  # this run itself does not count
])
def test_cooldown_rules(runs: list[RetrainRun], action: str, until_min: float | None, because: str | None) -> None:
    decision = decide("me", T0 + timedelta(minutes=30), runs, HOUR, NOW)
    assert decision.action == action
    assert decision.until == (None if until_min is None else T0 + timedelta(minutes=until_min))
    assert (decision.because.id if decision.because else None) == because


def test_two_runs_started_together_agree_on_which_retrains() -> None:
    first, second = run("a", "active", 1), run("b", "active", 2)
    assert decide("a", first.created, [first, second], HOUR, NOW).action == "run"
    assert decide("b", second.created, [first, second], HOUR, NOW).action == "defer"


def test_the_first_of_two_runs_retrains_after_the_second_deferred_because_of_it() -> None:
    """The race CI hit: b decides first, defers because of a, and schedules s; a decides next and sees s."""
    first, second = run("a", "active", 1), run("b", "active", 2)
    assert decide("b", second.created, [first, second], HOUR, NOW).action == "defer"
    after = [first, run("b", "other", 2, 3), run("s", "scheduled", 3)]
    assert decide("a", first.created, after, HOUR, NOW).action == "run"


def test_no_cooldown_retrains_whatever_else_is_there() -> None:
    assert decide("me", NOW, [run("a", "active", 1)], 0, NOW).action == "run"
    assert decide("me", NOW, [run("s", "scheduled", 1), run("a", "retrained", 0, 1)], 0, NOW).action == "run"


def test_reasons_name_the_run_and_the_time() -> None:
    decision = Decision("defer", until=T0, because=run("a", "retrained", -70, -60))
    assert decision.reason("churn") == ("deferred until 2026-11-03T12:00:00+00:00: flow run a retrained churn until "
                                        "2026-11-03T11:00:00+00:00 (retrain.cooldown_s)")
    assert "already scheduled for 2026-11-03T13:30:00+00:00 (flow run s)" in \
        Decision("already_deferred", because=run("s", "scheduled", 0)).reason("churn")


@pytest.mark.parametrize(("drift", "champion", "stale"), [
    ({"version": 1}, 2, True), ({"version": 2}, 2, False), ({"version": 3}, 2, False), ({}, 2, False),
    ({"version": 1}, None, False), ({"version": True}, 2, False), (None, 2, False),
])
def test_a_drift_of_a_replaced_champion_is_superseded(drift: dict[str, Any] | None, champion: int | None,
                                                       stale: bool) -> None:
    assert (superseded(drift, champion) is not None) == stale


def test_a_deferred_run_started_early_by_the_runner_prefetch_retrains() -> None:
    """A runner starts a scheduled run up to 10 s early: judged at the clock, the deferred run scheduled for
    the cooldown's end saw the cooldown still running and deferred itself again (seen in the e2e test)."""
    last = run("a", "retrained", 0, 10)            # its cooldown ends at 70 min; the deferral is scheduled then
    scheduled_for = T0 + timedelta(minutes=70)
    clock = scheduled_for - timedelta(seconds=8)
    assert decide("me", T0 + timedelta(minutes=11), [last], HOUR, clock).action == "defer"
    assert decide("me", T0 + timedelta(minutes=11), [last], HOUR, decision_time(clock, scheduled_for)).action == "run"
    assert decision_time(clock, None) == clock
    assert decision_time(scheduled_for + timedelta(seconds=5), scheduled_for) == scheduled_for + timedelta(seconds=5)
