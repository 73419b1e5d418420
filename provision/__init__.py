"""The local-cluster provisioner: machines (processes, containers or VMs) booted from a built image, each in a
network namespace of its own or on 127.0.0.1 ports, installed and brought to Running (``gravenctl cluster``)."""
