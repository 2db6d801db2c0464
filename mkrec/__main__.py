from mkrec.cli import main

raise SystemExit(main())
