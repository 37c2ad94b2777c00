from wsolbench.cli import main

raise SystemExit(main())
