import sys

from ._diagram import spec_markdown

sys.stdout.write(spec_markdown())
