"""Growth framework: the pure core (no prefect, sqlalchemy, slack_sdk or great_expectations)."""
