"""The machine-stage state machine: a transition table (data) fed to ``transitions``, behind ``NodeFSM``."""

from ._diagram import mermaid as mermaid
from ._diagram import spec_markdown as spec_markdown
from ._machine import NodeFSM as NodeFSM
from ._machine import Transition as Transition
from ._table import TRANSITIONS as TRANSITIONS
from ._table import Row as Row
from ._table import Stage as Stage
from ._table import Trigger as Trigger

__all__ = ["TRANSITIONS", "NodeFSM", "Row", "Stage", "Transition", "Trigger", "mermaid", "spec_markdown"]
