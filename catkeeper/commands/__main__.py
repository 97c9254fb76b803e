"""``python -m catkeeper.commands --markdown`` prints the README's tables."""

import sys

from catkeeper.commands.markdown import main

raise SystemExit(main(sys.argv[1:]))
