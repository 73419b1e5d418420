"""Generated from specs/machine.proto by `python -m api._gen`; do not edit."""
