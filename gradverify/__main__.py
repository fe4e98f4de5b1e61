import sys

from gradverify.cli import main

sys.exit(main())
