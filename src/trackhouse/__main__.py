from trackhouse.cli import main

raise SystemExit(main())
