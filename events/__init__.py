"""Signed, hash-chained event records, Merkle checkpoints, replay and offline verification.

Pure: no I/O. Storage adapters (``storage``) persist what ``ChainWriter`` produces; verifiers need
only the CA certificate.
"""

import typing

import lazy

from ._kinds import Kind as Kind
from ._record import GENESIS_PREV as GENESIS_PREV
from ._record import HASH_CUT as HASH_CUT
from ._record import NODE as NODE
from ._record import Actor as Actor
from ._record import Event as Event
from ._record import decode_event as decode_event
from ._record import encode_canonical as encode_canonical
from ._record import encode_event as encode_event
from ._record import event_hash as event_hash
from ._record import trusted_event_hash as trusted_event_hash

__all__ = [
    "GENESIS_PREV",
    "HASH_CUT",
    "NODE",
    "SCHEMAS",
    "WITNESSED_FORMAT",
    "WITNESS_PREFIX",
    "WITNESS_REASONS",
    "WITNESS_UNIT",
    "Actor",
    "BootOutcome",
    "BootRecord",
    "Bundle",
    "ChainVerifier",
    "ChainWriter",
    "Checkpoint",
    "CheckpointInfo",
    "Clock",
    "CompactRange",
    "Cosignature",
    "Cosigned",
    "Event",
    "EventLog",
    "KeyInfo",
    "Kind",
    "LogTail",
    "Manifest",
    "MemoryEventLog",
    "MerkleLevels",
    "NodeState",
    "Payload",
    "Prepared",
    "Published",
    "RunningSequence",
    "Schemas",
    "Seen",
    "Signed",
    "SlotState",
    "SystemClock",
    "VerifyReport",
    "WitnessRecords",
    "WitnessRow",
    "WitnessRule",
    "Witnessed",
    "add_cosignature",
    "applies",
    "check_extends",
    "check_proof",
    "checkpoint_key",
    "consistency_proof",
    "cosign",
    "cosignatures",
    "cosigned_key",
    "decode_event",
    "encode_canonical",
    "encode_event",
    "event_hash",
    "fold",
    "inclusion_proof",
    "iter_events",
    "leaf_hash",
    "merkle_root",
    "parse_note",
    "payload_of",
    "prove",
    "read_bundle",
    "read_payload",
    "replay",
    "replay_raw",
    "sign_note",
    "state_at",
    "to_payload",
    "trusted_event_hash",
    "verify_against_witnesses",
    "verify_bundle",
    "verify_consistency",
    "verify_cosignature",
    "verify_inclusion",
    "verify_items",
    "verify_note",
    "verify_since",
    "verify_tail",
    "verify_witness_certificate",
    "witness_name",
    "write_bundle",
]

if typing.TYPE_CHECKING:
    from ._bundle import Bundle as Bundle
    from ._bundle import Manifest as Manifest
    from ._bundle import iter_events as iter_events
    from ._bundle import read_bundle as read_bundle
    from ._bundle import verify_bundle as verify_bundle
    from ._bundle import write_bundle as write_bundle
    from ._chain import ChainWriter as ChainWriter
    from ._chain import Clock as Clock
    from ._chain import Prepared as Prepared
    from ._chain import Signed as Signed
    from ._chain import SystemClock as SystemClock
    from ._checkpoint import Checkpoint as Checkpoint
    from ._checkpoint import parse_note as parse_note
    from ._checkpoint import sign_note as sign_note
    from ._checkpoint import verify_note as verify_note
    from ._consistency import check_proof as check_proof
    from ._consistency import prove as prove
    from ._memory import MemoryEventLog as MemoryEventLog
    from ._merkle import CompactRange as CompactRange
    from ._merkle import MerkleLevels as MerkleLevels
    from ._merkle import consistency_proof as consistency_proof
    from ._merkle import inclusion_proof as inclusion_proof
    from ._merkle import leaf_hash as leaf_hash
    from ._merkle import merkle_root as merkle_root
    from ._merkle import verify_consistency as verify_consistency
    from ._merkle import verify_inclusion as verify_inclusion
    from ._ports import EventLog as EventLog
    from ._replay import BootOutcome as BootOutcome
    from ._replay import BootRecord as BootRecord
    from ._replay import NodeState as NodeState
    from ._replay import RunningSequence as RunningSequence
    from ._replay import SlotState as SlotState
    from ._replay import applies as applies
    from ._replay import fold as fold
    from ._replay import replay as replay
    from ._replay import replay_raw as replay_raw
    from ._replay import state_at as state_at
    from ._since import Seen as Seen
    from ._since import check_extends as check_extends
    from ._since import verify_since as verify_since
    from ._tail import LogTail as LogTail
    from ._tail import verify_tail as verify_tail
    from ._verify import ChainVerifier as ChainVerifier
    from ._verify import CheckpointInfo as CheckpointInfo
    from ._verify import KeyInfo as KeyInfo
    from ._verify import VerifyReport as VerifyReport
    from ._verify import verify_items as verify_items
    from ._witness import REASONS as WITNESS_REASONS
    from ._witness import Cosignature as Cosignature
    from ._witness import Witnessed as Witnessed
    from ._witness import WitnessRule as WitnessRule
    from ._witness import add_cosignature as add_cosignature
    from ._witness import cosign as cosign
    from ._witness import cosignatures as cosignatures
    from ._witness import verify_cosignature as verify_cosignature
    from ._witnessed import PREFIX as WITNESS_PREFIX
    from ._witnessed import WITNESS_UNIT as WITNESS_UNIT
    from ._witnessed import WITNESSED_FORMAT as WITNESSED_FORMAT
    from ._witnessed import Cosigned as Cosigned
    from ._witnessed import Published as Published
    from ._witnessed import WitnessRecords as WitnessRecords
    from ._witnessed import WitnessRow as WitnessRow
    from ._witnessed import checkpoint_key as checkpoint_key
    from ._witnessed import cosigned_key as cosigned_key
    from ._witnessed import verify_against_witnesses as verify_against_witnesses
    from ._witnessed import verify_witness_certificate as verify_witness_certificate
    from ._witnessed import witness_name as witness_name
    from .payloads import SCHEMAS as SCHEMAS
    from .payloads import Payload as Payload
    from .payloads import Schemas as Schemas
    from .payloads import payload_of as payload_of
    from .payloads import read_payload as read_payload
    from .payloads import to_payload as to_payload

# a name loads its module on first use: the supervisor needs only Kind (and image's format encode_canonical), not
# the chain's signing (pki, cryptography.x509) nor replay; tarfile and the bundle code load on the first export
_LAZY: dict[str, str] = {
    "ChainWriter": "_chain",
    "Clock": "_chain",
    "Prepared": "_chain",
    "Signed": "_chain",
    "SystemClock": "_chain",
    "Checkpoint": "_checkpoint",
    "parse_note": "_checkpoint",
    "sign_note": "_checkpoint",
    "verify_note": "_checkpoint",
    "check_proof": "_consistency",
    "prove": "_consistency",
    "MemoryEventLog": "_memory",
    "CompactRange": "_merkle",
    "MerkleLevels": "_merkle",
    "consistency_proof": "_merkle",
    "inclusion_proof": "_merkle",
    "leaf_hash": "_merkle",
    "merkle_root": "_merkle",
    "verify_consistency": "_merkle",
    "verify_inclusion": "_merkle",
    "EventLog": "_ports",
    "BootOutcome": "_replay",
    "BootRecord": "_replay",
    "NodeState": "_replay",
    "RunningSequence": "_replay",
    "SlotState": "_replay",
    "applies": "_replay",
    "fold": "_replay",
    "replay": "_replay",
    "replay_raw": "_replay",
    "state_at": "_replay",
    "Seen": "_since",
    "check_extends": "_since",
    "verify_since": "_since",
    "LogTail": "_tail",
    "verify_tail": "_tail",
    "ChainVerifier": "_verify",
    "CheckpointInfo": "_verify",
    "KeyInfo": "_verify",
    "VerifyReport": "_verify",
    "verify_items": "_verify",
    "WITNESS_REASONS": "_witness:REASONS",
    "Cosignature": "_witness",
    "Witnessed": "_witness",
    "WitnessRule": "_witness",
    "add_cosignature": "_witness",
    "cosign": "_witness",
    "cosignatures": "_witness",
    "verify_cosignature": "_witness",
    "WITNESS_PREFIX": "_witnessed:PREFIX",
    "WITNESS_UNIT": "_witnessed",
    "WITNESSED_FORMAT": "_witnessed",
    "Cosigned": "_witnessed",
    "Published": "_witnessed",
    "WitnessRecords": "_witnessed",
    "WitnessRow": "_witnessed",
    "checkpoint_key": "_witnessed",
    "cosigned_key": "_witnessed",
    "verify_against_witnesses": "_witnessed",
    "verify_witness_certificate": "_witnessed",
    "witness_name": "_witnessed",
    "SCHEMAS": "payloads",
    "Payload": "payloads",
    "Schemas": "payloads",
    "payload_of": "payloads",
    "read_payload": "payloads",
    "to_payload": "payloads",
    "Bundle": "_bundle",
    "Manifest": "_bundle",
    "iter_events": "_bundle",
    "read_bundle": "_bundle",
    "verify_bundle": "_bundle",
    "write_bundle": "_bundle",
}


__getattr__ = lazy.lazy_attributes(__name__, _LAZY, globals())
