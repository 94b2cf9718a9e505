"""Actor/learner and camera transport: the wire codec, ZMQ sockets with CURVE, in-process queues."""
