"""Links to the outside: one MQTT link, one HTTP client and one backoff, for the agent and the cloud alike."""
