"""Running the mesh on one machine: the process supervisor (``supervisor``) that starts
every component as its own process, ``ccbridge up`` (``run``) and the demo (``demo``)."""
