from catkeeper.cli import main

raise SystemExit(main())
