"""`python -m rnnlab.compare PATH...`"""

import sys

from rnnlab.compare.command import main

sys.exit(main())
