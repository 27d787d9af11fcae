"""A Zendesk (Sunshine Conversations v2) simulator held to Zendesk's published OpenAPI
document: the far side of ccbridge's ``zendesk`` connector in tests and demos."""
