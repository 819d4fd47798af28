//! The echo block: answers every `PING_REQ` with a `PING_CONF` to its sender carrying the same
//! data words and long sections at the same priority. Benchmarks and tests use it to measure and
//! check delivery; it keeps a count of pings answered.
//!
//! It is also the smallest example of a block: dispatch is a `match` on the GSN; the request is
//! read as its declared struct ([`PingReq`], a head followed by any words) through
//! [`Context::typed_head`], which counts and logs a request too short for it as a drop; every
//! other signal goes to [`Context::unhandled`].
//!
//! Invariant: one `PING_CONF` per well-formed `PING_REQ` that could be sent; a failed answer is
//! counted by the runtime (send failures) and the block stays usable.

use signals::gsn::PingReq;
use signals::{gsn, SignalView, MAX_SECTIONS};

use crate::block::{Block, Context, InitContext};
use crate::stats::CounterId;

/// The echo block.
#[derive(Debug, Default)]
pub struct Echo {
    answered: Option<CounterId>,
}

impl Echo {
    /// A new echo block.
    pub fn new() -> Echo {
        Echo::default()
    }

    fn answer(&mut self, req: &SignalView<'_>, ctx: &mut Context<'_>) {
        // The head is the sequence word; the answer echoes it and the words after it as sent.
        let Some((_head, _rest)) = ctx.typed_head::<PingReq>(req) else { return };
        let mut sections: [&[u32]; MAX_SECTIONS] = [&[]; MAX_SECTIONS];
        let mut n = 0;
        for s in req.sections().take(MAX_SECTIONS) {
            sections[n] = s;
            n += 1;
        }
        let conf = ctx
            .signal(gsn::PING_CONF, req.sender())
            .data(req.data())
            .sections(&sections[..n])
            .priority(req.priority());
        if ctx.send(&conf).is_ok() {
            if let Some(c) = self.answered {
                ctx.bump(c, 1);
            }
        }
    }
}

impl Block for Echo {
    fn init(&mut self, init: &mut InitContext<'_>) {
        self.answered = Some(init.counter("pings_answered"));
    }

    fn execute(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        match signal.gsn() {
            gsn::PING_REQ => self.answer(signal, ctx),
            gsn::START_ORD | gsn::STOP_REQ => {}
            _ => ctx.unhandled(signal),
        }
    }
}
