"""Where the stages run: in this process, or on Ray."""
