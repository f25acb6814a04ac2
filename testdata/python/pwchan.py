"""Channel workloads the Go tests and benchmarks of pyworkers run inside interpreters."""

import time

import pyworkers


def echo(src_id, dst_id):
    """Forward every item from src to dst until src is closed; then close dst."""
    src, dst = pyworkers.Channel(src_id), pyworkers.Channel(dst_id)
    for item in src:
        dst.send(item)
    dst.close()


def pingpong(out_id, in_id, n):
    """n round trips through an echo: returns (p50 ns, p99 ns, total ns)."""
    out, inp = pyworkers.Channel(out_id), pyworkers.Channel(in_id)
    lat = []
    clock = time.perf_counter_ns
    start = clock()
    for k in range(n):
        t0 = clock()
        out.send(k)
        inp.recv()
        lat.append(clock() - t0)
    total = clock() - start
    lat.sort()
    return (lat[len(lat) // 2], lat[min(len(lat) - 1, len(lat) * 99 // 100)], total)


def produce(ch_id, n, close=True):
    ch = pyworkers.Channel(ch_id)
    send = ch.send
    for k in range(n):
        send(k)
    if close:
        ch.close()


def consume(ch_id):
    """Receive until closed; returns (count, sum)."""
    count = total = 0
    for x in pyworkers.Channel(ch_id):
        count += 1
        total += x
    return (count, total)


def produce_batched(ch_id, n, batch=64):
    """Send 0..n-1 with send_many, batch items at a time, then close."""
    ch = pyworkers.Channel(ch_id)
    send_many = ch.send_many
    for start in range(0, n, batch):
        send_many(range(start, min(start + batch, n)))
    ch.close()


def consume_batched(ch_id):
    """recv_many until closed; returns (count, sum)."""
    ch = pyworkers.Channel(ch_id)
    count = total = 0
    recv_many = ch.recv_many
    while True:
        try:
            items = recv_many(256)
        except pyworkers.ChannelClosed:
            return (count, total)
        count += len(items)
        total += sum(items)
