import sys

from ufarsap_engine.cli import main

sys.exit(main())
