"""A power loss must not make a node give again the seqs of its log that a peer already processed (the fault
harness's "did not converge" after `powerloss`/`eio`, seed 567982894). A node sends its log as soon as entries are
committed, before they are durable; a peer stores them and records its progress in that log. If the power then
goes, the node's catalog loses that tail; were the revisions it stores next numbered from the durable end, under
the same store id, the peer (asking for the log after its progress) would never receive them (protocol.md, "Log")."""

import os
import shutil
import sys
from pathlib import Path

from cluster import wait_converged
from helpers import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))
from lazystore import LazyStore, fusepy_missing  # noqa: E402


def test_revisions_made_after_a_power_loss_reach_a_peer_that_had_the_lost_log_tail(cluster):
    assert fusepy_missing() is None, fusepy_missing()
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    store = a.home / "store"
    lazy = LazyStore(a.dir / "store-backing", store, a.dir / "lazyfs.log")
    shutil.move(store, lazy.backing)  # the store `init` made, now under lazyfs
    store.mkdir(mode=0o700)
    try:
        lazy.mount()
        cluster.start()
        # Closed, not fsynced: committed on a and sent to b, durable on b only.
        with open(a.p("unsynced"), "wb") as f:
            f.write(b"sent before it was durable")
        assert wait_until(lambda: os.path.exists(b.p("unsynced")), 30), "b never got a's first file"
        sent = a.last_seq()
        assert wait_until(lambda: any(seq >= sent for _, seq in b.progress()), 30), b.progress()
        b.stop()  # back only after a's next file, so that a cannot take the lost revisions back from b first
        a.kill9()
        print(lazy.power_loss())
        lazy.mount()
        a.start()
        assert (a.last_seq() or 0) < sent, "the power loss took nothing: the test proves nothing"
        with open(a.p("after"), "wb") as f:
            f.write(b"made after the power loss")  # committed at close (an fsync would wait for b's ack)
        b.start()
        cluster.wait_connected()
        wait_converged([a, b], 30)
    finally:
        for n in (a, b):
            if n.running:
                n.stop()
        lazy.close()
        shutil.rmtree(lazy.backing, ignore_errors=True)
