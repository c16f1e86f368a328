//! A write in flight: what [`Store::write_async`](crate::Store::write_async)
//! returns, a future that resolves to the write's LSN once it is durable and
//! visible, and that a caller without a runtime can wait for instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::{Lsn, Result};
use crate::wal::Receipt;

/// A write in flight, returned by [`Store::write_async`](crate::Store::write_async).
///
/// Await it (any executor: tokio, async-std, smol, a `block_on`), or call
/// [`WriteTicket::wait`] from a thread. It resolves to the batch's LSN once
/// the batch is durable and visible to readers, or to the error `write`
/// would have returned; the durability, ordering, failure and poisoning
/// rules are `write`'s.
///
/// The write is queued when `write_async` returns: dropping the ticket does
/// not withdraw it. A dropped ticket's write becomes durable (or fails) like
/// any other, and nothing tells the caller which; a broker that must know
/// keeps the ticket.
#[derive(Debug)]
#[must_use = "the write is queued either way; the ticket is the only way to learn its LSN or its error"]
pub struct WriteTicket {
    state: State,
}

#[derive(Debug)]
enum State {
    /// Queued in the WAL's group commit.
    Queued(Receipt),
    /// Settled before it was queued (refused, or a direct-mode write done
    /// on the caller's thread); `None` once handed out.
    Settled(Option<Result<Lsn>>),
}

impl WriteTicket {
    pub(crate) fn queued(receipt: Receipt) -> WriteTicket {
        WriteTicket { state: State::Queued(receipt) }
    }

    pub(crate) fn settled(outcome: Result<Lsn>) -> WriteTicket {
        WriteTicket { state: State::Settled(Some(outcome)) }
    }

    /// Blocks the calling thread until the write is settled, and returns
    /// its LSN or its error. Many tickets waited for one after the other
    /// share syncs: their writes were queued together.
    ///
    /// # Errors
    ///
    /// Those of [`Store::write`](crate::Store::write).
    pub fn wait(self) -> Result<Lsn> {
        match self.state {
            State::Queued(receipt) => receipt.wait(),
            State::Settled(outcome) => outcome.expect("a ticket's outcome is handed out once"),
        }
    }
}

impl Future for WriteTicket {
    type Output = Result<Lsn>;

    /// Polling again after `Ready` panics, as the `Future` contract allows.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Lsn>> {
        let state = &mut self.get_mut().state;
        match state {
            State::Queued(receipt) => {
                let Poll::Ready(outcome) = receipt.poll(cx) else { return Poll::Pending };
                *state = State::Settled(None);
                Poll::Ready(outcome)
            }
            State::Settled(outcome) => {
                Poll::Ready(outcome.take().expect("a ticket polled after it resolved"))
            }
        }
    }
}
