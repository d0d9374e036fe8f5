"""The search space of params.yaml's `tune:` section, checked against the stage it tunes, and a
trial's config: the profile, shortened to the trial budget, with the sampled values applied."""

from __future__ import annotations

from typing import Any

from radiodiff.config import Params
from radiodiff.errors import UserError
from radiodiff.tune_config import ParamKind, ParamSpec, TuneConfig, TuneStage
from radiodiff.tuning.overrides import apply_overrides

# The params sections each tunable stage reads: a key elsewhere would not change the trial.
STAGE_SECTIONS = {TuneStage.TRAIN_LDM: ("ldm", "condition")}


def budget_overrides(tune: TuneConfig) -> dict[str, Any]:
    """What turns the stage's params into a trial: `trial_steps` of training in this process on
    one device, validated every `val_every` steps on the live weights (an EMA over
    ~1/(1 - decay) steps would lag a short trial), with a checkpoint only at the end."""
    if tune.stage is TuneStage.TRAIN_LDM:
        return {"ldm.train.total_steps": tune.trial_steps, "ldm.train.val_every": tune.val_every,
                "ldm.train.checkpoint_every": tune.trial_steps, "ldm.train.val_on_ema": False,
                "ldm.train.devices": 1}
    raise AssertionError(f"no budget for {tune.stage}")


def trial_config(params: Params, sampled: dict[str, Any]) -> Params:
    """`params` shortened to the trial budget, then with the sampled values applied."""
    return apply_overrides(apply_overrides(params, budget_overrides(params.tune)), sampled)


def check_space(params: Params) -> None:
    """Reject a search space that cannot work, before any trial runs: no parameters, a key the
    stage does not read or the budget sets, or a bound or choice its config field refuses."""
    tune = params.tune
    if not tune.params:
        raise UserError("tune.params is empty: list at least one parameter to search")
    try:
        budgeted = apply_overrides(params, budget_overrides(tune))
    except UserError as exc:
        raise UserError(f"tune.trial_steps/val_every do not fit the {tune.stage.value} params: {exc}") from None
    sections = STAGE_SECTIONS[tune.stage]
    for spec in tune.params:
        if spec.name.split(".")[0] not in sections:
            raise UserError(f"tune.params: {spec.name!r} is not read by {tune.stage.value} "
                            f"(it reads {', '.join(sections)})")
        if spec.name in budget_overrides(tune):
            raise UserError(f"tune.params: {spec.name!r} is set by the trial budget (tune.trial_steps/val_every)")
        for value in candidate_values(spec):
            apply_overrides(budgeted, {spec.name: value})


def candidate_values(spec: ParamSpec) -> list[Any]:
    """The bounds (or every choice) of a parameter, typed as Optuna would hand them out."""
    if spec.type is ParamKind.CATEGORICAL:
        return list(spec.choices)
    if spec.type is ParamKind.INT:
        return [int(spec.low), int(spec.high)]
    return [spec.low, spec.high]


def suggest(trial: Any, spec: ParamSpec) -> Any:
    """Draw one parameter from an `optuna.Trial` under its own dotted name."""
    if spec.type is ParamKind.CATEGORICAL:
        return trial.suggest_categorical(spec.name, list(spec.choices))
    if spec.type is ParamKind.INT:
        return trial.suggest_int(spec.name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(spec.name, spec.low, spec.high, step=spec.step, log=spec.log)
