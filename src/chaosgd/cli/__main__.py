import sys

from chaosgd.cli import main

sys.exit(main())
