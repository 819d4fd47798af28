//! Sends that back-pressure must delay, never lose: a commit, complete or abort that is dropped
//! leaves locks held for ever, an answer that is dropped leaves a client waiting. When a send
//! meets a full job buffer or a full send buffer, the signal is copied into a FIFO queue and a
//! 1 ms timer (`RESEND`) retries the queue in order; while anything is queued, later sends queue
//! behind it, so signals from this block keep their order. A link that is down is not
//! back-pressure: that send fails (the caller treats it as a node failure).
//!
//! The queue is bounded by what can be in flight: each entry belongs to a record of a pool
//! sized at start (an operation, a transaction, a schema change).

use std::collections::VecDeque;

use node::block::{Context, SendError};
use node::remote::RemoteError;
use signals::{BlockRef, Gsn, Signal};

use crate::protocol::RESEND;

/// How long before the queue is retried.
const RETRY_NS: u64 = 1_000_000;

#[derive(Debug)]
struct Queued {
    to: BlockRef,
    gsn: Gsn,
    data: Vec<u32>,
    sections: Vec<Vec<u32>>,
}

/// A block's queue of delayed sends.
#[derive(Debug, Default)]
pub struct Resend {
    queue: VecDeque<Queued>,
    armed: bool,
    /// Signals that had to wait, in all.
    pub delayed: u64,
}

fn is_back_pressure(e: &SendError) -> bool {
    matches!(e, SendError::JobBufferFull { .. } | SendError::Remote(RemoteError::Overloaded { .. }))
}

impl Resend {
    /// Sends `gsn` to `to` now or, under back-pressure, later; `false` when it cannot be sent
    /// at all.
    pub fn send(&mut self, ctx: &mut Context<'_>, gsn: Gsn, to: BlockRef, data: &[u32], sections: &[&[u32]]) -> bool {
        let signal = ctx.signal(gsn, to).data(data).sections(sections);
        self.send_signal(ctx, &signal)
    }

    /// [`Resend::send`] of a signal made by the caller.
    pub fn send_signal(&mut self, ctx: &mut Context<'_>, signal: &Signal<'_>) -> bool {
        if self.queue.is_empty() {
            match ctx.send(signal) {
                Ok(()) => return true,
                Err(e) if is_back_pressure(&e) => {}
                Err(e) => {
                    tracing::warn!(gsn = %signal.gsn, to = %signal.receiver, error = %e, "send failed");
                    return false;
                }
            }
        }
        self.delayed += 1;
        self.queue.push_back(Queued {
            to: signal.receiver,
            gsn: signal.gsn,
            data: signal.data.to_vec(),
            sections: signal.sections.iter().map(|s| s.to_vec()).collect(),
        });
        self.arm(ctx);
        true
    }

    fn arm(&mut self, ctx: &mut Context<'_>) {
        if !self.armed && ctx.send_delayed(RETRY_NS, RESEND, &[]).is_ok() {
            self.armed = true;
        }
    }

    /// The `RESEND` timer: sends what it can, in order.
    pub fn on_timer(&mut self, ctx: &mut Context<'_>) {
        self.armed = false;
        while let Some(q) = self.queue.front() {
            let sections: Vec<&[u32]> = q.sections.iter().map(Vec::as_slice).collect();
            let signal = ctx.signal(q.gsn, q.to).data(&q.data).sections(&sections);
            match ctx.send(&signal) {
                Ok(()) => {}
                Err(e) if is_back_pressure(&e) => break,
                Err(e) => tracing::warn!(gsn = %q.gsn, to = %q.to, error = %e, "delayed send failed"),
            }
            self.queue.pop_front();
        }
        if !self.queue.is_empty() {
            self.arm(ctx);
        }
    }
}
