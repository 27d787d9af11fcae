"""Genesys Cloud simulator: the far side of ccbridge's ``genesys`` connector (OAuth,
Open Messaging inbound API validated against Genesys's SDK models, signed outbound
notifications, conversations an agent ends), for tests and the demo
(``python -m ccbridge.simulators.genesys``)."""
