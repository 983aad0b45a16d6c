import sys

from mmrep.cli import main

sys.exit(main())
