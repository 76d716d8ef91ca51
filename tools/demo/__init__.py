"""The demo city: Jiaxing shaped as the 2004 survey found it (`make demo`; `make run` loads
it on an empty database). `plan` decides everything from a seed; `load` writes it through
the services' own code paths."""

from tools.demo.load import Loaded, load, load_into, registry_is_empty

__all__ = ["Loaded", "load", "load_into", "registry_is_empty"]
