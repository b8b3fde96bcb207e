import sys

from ppbench.cli import main

sys.exit(main())
