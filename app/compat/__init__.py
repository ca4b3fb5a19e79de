"""Every adaptation of faust/aiokafka internals, each checked against the installed version."""
