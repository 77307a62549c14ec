"""The broker's I/O: the one event loop and the listeners that register with it.

The only broker package that imports zmq.  Listeners own their sockets; the loop polls
every registered socket, hands readable ones to their listener, and runs the timers.
"""
