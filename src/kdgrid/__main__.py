from kdgrid.cli import main

raise SystemExit(main())
