"""The Faust/Kafka adapter: the only code that touches Faust, aiokafka or their internals."""
