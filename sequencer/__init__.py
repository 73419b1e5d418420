"""Sequences as data (phases of tasks), the runner (lock, take-over table, cancellation, timeouts, events),
the tasks that call the ports, and boot tracing from the log."""

import typing

import lazy

from ._context import CancelToken as CancelToken
from ._context import Context as Context
from ._context import Ports as Ports
from ._context import Runtime as Runtime
from ._lifecycle import apply_config as apply_config
from ._lifecycle import bring_up as bring_up
from ._lifecycle import confirm_config as confirm_config
from ._lifecycle import record_boot as record_boot
from ._model import Condition as Condition
from ._model import OnError as OnError
from ._model import Outcome as Outcome
from ._model import Phase as Phase
from ._model import Sequence as Sequence
from ._model import SequenceName as SequenceName
from ._model import Task as Task
from ._model import condition as condition
from ._model import task as task
from ._requests import InstallRequest as InstallRequest
from ._requests import RebootRequest as RebootRequest
from ._requests import Request as Request
from ._requests import ResetRequest as ResetRequest
from ._requests import ShutdownRequest as ShutdownRequest
from ._requests import UpgradeRequest as UpgradeRequest
from ._runner import Run as Run
from ._runner import Sequencer as Sequencer
from ._runner import SequenceResult as SequenceResult
from ._takeover import TAKEOVER as TAKEOVER
from ._takeover import may_take_over as may_take_over
from .sequences import SEQUENCES as SEQUENCES

__all__ = [
    "SEQUENCES",
    "TAKEOVER",
    "CancelToken",
    "Condition",
    "Context",
    "InstallRequest",
    "OnError",
    "Outcome",
    "Phase",
    "Ports",
    "RebootRequest",
    "Request",
    "ResetRequest",
    "Run",
    "Runtime",
    "Sequence",
    "SequenceName",
    "SequenceResult",
    "Sequencer",
    "ShutdownRequest",
    "Task",
    "UpgradeRequest",
    "apply_config",
    "bring_up",
    "condition",
    "confirm_config",
    "may_take_over",
    "record_boot",
    "render_chrome",
    "render_json",
    "render_svg",
    "task",
]

if typing.TYPE_CHECKING:
    from ._render import render_chrome as render_chrome
    from ._render import render_json as render_json
    from ._render import render_svg as render_svg

# the trace renderers load on the first trace request only
_LAZY: dict[str, str] = {
    "render_chrome": "_render",
    "render_json": "_render",
    "render_svg": "_render",
}


__getattr__ = lazy.lazy_attributes(__name__, _LAZY, globals())
