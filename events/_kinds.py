"""Event kinds, dotted, and the payload keys each carries (``specs/event-log.md`` lists them all)."""

from __future__ import annotations

__all__ = ["Kind"]


class Kind:
    GENESIS = "log.genesis"  # {origin, cert (DER)}
    CHECKPOINT = "log.checkpoint"  # {size, root, frontier, note, sealed, reason}
    KEY_ROTATED = "key.rotated"  # {cert (DER) of the next key}; signed by the old key
    BOOT_STARTED = "boot.started"  # {boot_id, slot, version, image_digest, boot_number}
    BOOT_SELECTED = "boot.selected"  # {slot, tries_left, reason}  (written for the bootloader)
    BOOT_FALLBACK = "boot.fallback"  # {from_slot, to_slot, reason}
    BOOT_COMMITTED = "boot.committed"  # {slot}
    BOOT_FAILED = "boot.failed"  # {boot_id, slot, version, exit_code, signal, reason}  (written for the bootloader)
    BOOT_REVERTED = "boot.reverted"  # {from_slot, to_slot, version, digest}: a rollback made the other slot the default
    DISK_WIPE_FAILED = "disk.wipe_failed"  # {labels, reason, sinks}: a deferred wipe was not done (shipping failed)
    DISK_WIPED = "disk.wiped"  # {labels, reason, log_to_seq, shipped}: the deferred wipe of the log's partition
    FSM_TRANSITION = "fsm.transition"  # {trigger, src, dst}
    SEQUENCE_STARTED = "sequence.started"  # {sequence, phases, request}
    SEQUENCE_STOPPED = "sequence.stopped"  # {sequence, outcome: ok|cancelled, duration_ns, cancelled_by?}
    SEQUENCE_FAILED = "sequence.failed"  # {sequence, outcome: failed, duration_ns, error, code, phase, task}
    PHASE_STARTED = "phase.started"  # {sequence, phase, index, count}
    PHASE_STOPPED = "phase.stopped"  # {sequence, phase, duration_ns, outcome: ok|cancelled}
    PHASE_FAILED = "phase.failed"  # {sequence, phase, duration_ns, error, code, task}
    PHASE_SKIPPED = "phase.skipped"  # {sequence, phase, index, count, when}
    TASK_STARTED = "task.started"  # {sequence, phase, task}
    TASK_STOPPED = "task.stopped"  # {sequence, phase, task, duration_ns, outcome: ok|cancelled}
    TASK_FAILED = "task.failed"  # {sequence, phase, task, duration_ns, error, code, fatal}
    CONFIG_APPLIED = "config.applied"  # {digest, mode, diff, version}
    CONFIG_STAGED = "config.staged"  # {digest, diff}
    CONFIG_REVERTED = "config.reverted"  # {digest, reason}
    CONFIG_CONFIRMED = "config.confirmed"  # {digest}
    IMAGE_INSTALLED = "image.installed"  # {slot, version, digest, key_id}
    IMAGE_MEASURED = "image.measured"  # {slot, version, digest}: what this boot runs, as the bootloader measured it
    API_REQUEST = "api.request"  # {method, args}
    API_DENIED = "api.denied"  # {method, subject, roles, reason}
    API_REFUSED = "api.refused"  # {method, sequence, reason}: a request recorded, then refused (e.g. unshipped events)
    SERVICE_STARTED = "service.started"  # {service, address}: a service of the agent's began serving
    SERVICE_STOPPED = "service.stopped"  # {service, address}
    SERVICE_FAILED = "service.failed"  # {service, address, reason}: it could not start; the node goes on without it
    AUDIT_SHIPPED = "audit.shipped"  # {sink, file, to_seq, events}: the log up to to_seq was copied and verified
    NETWORK_PLANNED = "network.planned"  # {interfaces, applied: false, why}: the sandbox records what it would do
    # The netlink platform (node._network): one event per change it makes, each with before and after.
    NETWORK_LINK = "network.link"  # {interface, change: up|down|mtu, before: {up, mtu}, after: {up, mtu}}
    NETWORK_ADDRESS = "network.address"  # {interface, op: add|remove, before: CIDR|None, after: CIDR|None}
    NETWORK_ROUTE = "network.route"  # {interface, op: add|remove, before: route|None, after: route|None}
    NETWORK_HOSTNAME = "network.hostname"  # {before, after, applied, why?}: applied only in the node's own UTS ns
    NETWORK_RESOLVERS = "network.resolvers"  # {path, before, after}: nameservers in the node's resolv.conf
    NETWORK_FAILED = "network.failed"  # {interface, op, target, error, errno}: one change the kernel refused
    NETWORK_APPLIED = "network.applied"  # {platform, changes, failed, summary, interfaces, notes}; changes 0: no-op
    # etcd on controlplane nodes (node._etcd_service): every change of the service's state
    ETCD_WAITING = "etcd.waiting"  # {for: bootstrap|members|promotion|leave, reason}: what it waits for, on change
    ETCD_STARTED = "etcd.started"  # {pid, initial_cluster_state: new|existing, why, client_url, peer_url}
    ETCD_EXITED = "etcd.exited"  # {code, reason, quick_exits}: the process ended unasked (restarted unless failed)
    ETCD_FAILED = "etcd.failed"  # {reason}: it will not start (a port taken, a corrupt data folder)
    ETCD_STOPPED = "etcd.stopped"  # {reason, code}: stopped by the node
    ETCD_HEALTH = "etcd.health"  # {healthy, reason, member_id}: the quorum read's result, on change
    ETCD_BOOTSTRAPPED = "etcd.bootstrapped"  # {member_id, name}: a new one-member cluster
    ETCD_JOINED = "etcd.joined"  # {member_id, as: learner, through}: added itself to the cluster
    ETCD_PROMOTED = "etcd.promoted"  # {member_id}: a voting member promoted it
    ETCD_LEFT = "etcd.left"  # {member_id}: removed itself from the cluster (etcd leave, graceful reset)
    ETCD_LOCKED = "etcd.locked"  # {lock, holder, ttl}: this node took a lease-backed lock (the upgrade lock)
    ETCD_UNLOCKED = "etcd.unlocked"  # {lock, holder}: it released it (healthy again after the upgrade)
    # witnessed logs (node._witness): what a node's publisher and its witness did, on change (specs/event-log.md §13)
    WITNESS_STARTED = "witness.started"  # {witness, key_id, holds}: this node's witness serves (holds: origins)
    WITNESS_ADOPTED = "witness.adopted"  # {origin, size, root, witness}: the first checkpoint it cosigned of an origin
    WITNESS_REFUSED = "witness.refused"  # {origin, size, reason, message, code, witnessed_size}: once per origin+reason
    WITNESS_FORGOTTEN = "witness.forgotten"  # {origin, witness, size, root, actor}: an operator dropped its state
    WITNESS_UNPUBLISHED = "witness.unpublished"  # {size, reason}: this node could not publish its checkpoint
