"""The operator console: a web page served from the actor's side (``server``), fed by a
thread-safe hub (``hub``) that the actor loop publishes to and takes the operator's controls
from (``bridge``)."""
