if __name__ == "__main__":  # not when a child process imports it as __mp_main__
    from trackhouse.cli import main

    raise SystemExit(main())
