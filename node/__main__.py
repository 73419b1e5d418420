import importlib
import sys

from node._boottrace import mark

mark("python")  # before the command line's imports, which are what the next mark measures
sys.exit(importlib.import_module("node.cli").main())
