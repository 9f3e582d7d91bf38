if __name__ == "__main__":  # importing the package's main module starts nothing
    from trackhouse.cli import main

    raise SystemExit(main())
