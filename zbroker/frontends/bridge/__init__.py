"""The bridge front door: plain ZeroMQ applications in and out, and mirrors of other clusters."""
