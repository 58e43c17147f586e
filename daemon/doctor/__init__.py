"""`gimp-draggan doctor`: the checks of the machine, the daemon, the models and GIMP."""
