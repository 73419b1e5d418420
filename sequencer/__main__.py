import sys

from ._spec import spec_markdown

sys.stdout.write(spec_markdown())
