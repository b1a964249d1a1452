"""The contract every output format keeps, and the choice between them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gcbatch.events import Event

if TYPE_CHECKING:
    from gcbatch.engine.outcomes import ApplySummary
    from gcbatch.operations.adopt import AdoptResult
    from gcbatch.operations.download import DownloadResult
    from gcbatch.operations.init import InitResult
    from gcbatch.operations.plan import PlanResult
    from gcbatch.operations.refresh import Refresh
    from gcbatch.operations.schema import SchemaResult
    from gcbatch.operations.validate import ValidateResult
    from gcbatch.polling import WaitOutcome
    from gcbatch.status import StatusReport

__all__ = ["View", "make_view"]


class View(Protocol):
    """What a command asks of its output (see :mod:`gcbatch.views`)."""

    def event(self, event: Event) -> None:
        """The command's event hook: progress, from any thread."""

    def close(self) -> None:
        """Stop live progress; flush what was held back."""

    def warn(self, text: str, *, once: bool = False) -> None: ...

    def show_validation(self, result: ValidateResult) -> None: ...

    def show_plan(self, result: PlanResult, *, token_missing: bool = False) -> None: ...

    def show_apply(self, summary: ApplySummary) -> None: ...

    def show_status(self, result: Refresh) -> None: ...

    def show_wait(self, report: StatusReport, *, timed_out: bool) -> None: ...

    def show_waited(self, outcome: WaitOutcome) -> None: ...

    def show_download(self, result: DownloadResult) -> None: ...

    def show_adopt(self, result: AdoptResult) -> None: ...

    def show_init(self, result: InitResult) -> None: ...

    def show_schema(self, result: SchemaResult) -> None: ...


def make_view(as_json: bool) -> View:
    """``--json`` → the machine view; else the human one."""
    if as_json:
        from gcbatch.views.machine import JsonView

        return JsonView()
    from gcbatch.views.human import HumanView

    return HumanView()
