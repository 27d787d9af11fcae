"""The Infobip side of ccbridge: the Conversations API client (``client``) that Session,
History and the CLI share, and the ``ccbridge infobip`` commands (``cli``)."""
