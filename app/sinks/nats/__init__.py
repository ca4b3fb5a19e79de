"""The NATS sink: JetStream/core publisher and the subject and message-id rules."""
