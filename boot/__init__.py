"""The boot environment and its one rule book, shared by the bootloader (the machine supervisor) and the agent's
sequences: slots, boot counting, arm, commit, invalidate, rollback, fallback and the next slot. Pure: no I/O
(``storage`` keeps the environment in META)."""

from ._env import BootEnv as BootEnv
from ._env import Slot as Slot
from ._env import SlotBoot as SlotBoot
from ._rules import DEFAULT_TRIES as DEFAULT_TRIES
from ._rules import BootChoice as BootChoice
from ._rules import BootEvent as BootEvent
from ._rules import arm as arm
from ._rules import bootable_slots as bootable_slots
from ._rules import choose_slot as choose_slot
from ._rules import fallback_of as fallback_of
from ._rules import install_target as install_target
from ._rules import installed as installed
from ._rules import mark_bad as mark_bad
from ._rules import mark_good as mark_good
from ._rules import next_slot as next_slot
from ._rules import revert as revert
from ._rules import rollback as rollback

__all__ = [
    "DEFAULT_TRIES",
    "BootChoice",
    "BootEnv",
    "BootEvent",
    "Slot",
    "SlotBoot",
    "arm",
    "bootable_slots",
    "choose_slot",
    "fallback_of",
    "install_target",
    "installed",
    "mark_bad",
    "mark_good",
    "next_slot",
    "revert",
    "rollback",
]
