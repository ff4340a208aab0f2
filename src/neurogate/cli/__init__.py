"""The neurogate command line: a thin layer over the library."""
