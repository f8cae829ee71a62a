"""Development peers: the local Kafka broker and the dev SMTP sink (streamapp dev, tests)."""
