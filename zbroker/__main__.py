import sys

from zbroker.cli import main

sys.exit(main())
