from readapt.cli import main

raise SystemExit(main())
