import sys

from jobrunner.console import main

sys.exit(main())
