"""Stage: stop the build (exit 4) when any gate failed; nothing after this runs."""

from __future__ import annotations

from pipeline.errors import GateFailed
from pipeline.report import gate_advice, gates_table
from pipeline.stages.base import BuildContext


class CheckGates:
    name = "checking gates"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        return None

    def run(self, ctx: BuildContext) -> None:
        gates = ctx.results["validate"]["gates"]
        failed = [g for g in gates if not g["passed"]]
        if failed:
            raise GateFailed(
                f"{len(failed)} of {len(gates)} gates failed; the build is not releasable "
                f"(report: {ctx.build_dir / 'report.md'}; thresholds: [validate] in {ctx.config.path.name})",
                gates_table(gates) + "\n\nWhat you can do:\n" + gate_advice(gates),
            )
