from wallet.bench import main

raise SystemExit(main())
