"""A built job as the calls use it: per stage, its functions, its states
and the key selector of the stage after it; the side outputs by name."""

from ._job import AGGREGATE, CONTENTS, MAP, PROCESS, Job, to_wit
from ._out import row_cache

__all__ = ["AGGREGATE", "CONTENTS", "MAP", "PROCESS", "build", "to_wit"]


class PlannedStage:
    __slots__ = ("kind", "fn", "fire", "add", "merge", "decls", "names", "next_key", "rows")

    def __init__(self, stage, next_key):
        self.kind = stage.kind
        self.fn = stage.fn
        self.fire = stage.fn
        self.add = stage.add
        self.merge = stage.merge
        self.decls = [(s.name, s.kind) for s in stage.states]
        self.names = {s.name: i for i, s in enumerate(stage.states)}
        self.next_key = next_key
        self.rows = row_cache(next_key)  # what Out.emit_each keeps


class Plan:
    __slots__ = ("job", "stages", "sides")

    def __init__(self, job):
        self.job = job
        stages = job._stages
        self.stages = [
            PlannedStage(s, stages[i + 1].key if i + 1 < len(stages) else None)
            for i, s in enumerate(stages)
        ]
        self.sides = {}
        for tag, (name, _) in enumerate(job._sides, 1):
            self.sides.setdefault(name, tag)


def build(job_fn, params):
    """The plan of the job `job_fn(params)` returns."""
    job = job_fn(params)
    if not isinstance(job, Job):
        raise TypeError(
            f"the job function must return a sluice.pipeline.Job, not {type(job).__name__}"
        )
    return Plan(job)
