import sys

from criservice.cli import main

sys.exit(main())
