"""ccbridge services: Session, History, Routing, Connector, and their shared runtime."""
