//! A verified program's one optimisation: registers that only ever hold one column become
//! that column's field slot, and their `load_column` copies go away; then the slots are
//! renumbered densely (a smaller register file to reset per row) and the walk over the row
//! image stops at the last column still read.
//!
//! A register `r` is replaced by the field of column `c` when its only writer is one
//! `load_column r, c` at instruction `p`, and `p` dominates every instruction that reads `r`
//! (every path from the start to the read passes through `p`; outputs are read by `return`,
//! group keys and aggregate arguments by `aggregate`). Then on every path the read sees the
//! column's value, as it would have through the copy. A read that some path reaches without
//! passing `p` (the register would still be NULL there) keeps the register and the copy.
//!
//! Dominators come from the Cooper-Harvey-Kennedy intersection ("A Simple, Fast Dominance
//! Algorithm", 2001), which needs a single pass here: jumps go forward only, so instruction
//! order is a topological order of the control-flow graph.

use super::aggregate::Plan;
use super::run::{Op, OutputKind, Step, NO_FIELD};

/// The parts of a verified program the optimisation rewrites.
pub(super) struct Parts<'a> {
    pub(super) ops: &'a mut Vec<Op>,
    /// Per op: the instruction it came from (named by overflow errors).
    pub(super) origins: &'a mut Vec<u32>,
    pub(super) output: &'a mut [(u16, OutputKind)],
    pub(super) plan: &'a mut Plan,
    pub(super) steps: &'a mut Vec<Step>,
    /// Registers first, then fields: the count of both.
    pub(super) slots: &'a mut usize,
    /// How many of the slots are registers.
    pub(super) registers: usize,
}

/// Calls `f` on each slot operand of `op`, with whether the op writes it (reads come first).
fn operands(op: &mut Op, f: &mut impl FnMut(&mut u16, bool)) {
    match op {
        Op::Copy { dst, src } => {
            f(src, false);
            f(dst, true);
        }
        Op::Const { dst, .. } => f(dst, true),
        Op::ArithI64 { dst, a, b, .. }
        | Op::ArithU64 { dst, a, b, .. }
        | Op::ArithF64 { dst, a, b, .. }
        | Op::Compare { dst, a, b, .. }
        | Op::And { dst, a, b }
        | Op::Or { dst, a, b }
        | Op::AddMonths { dst, a, b } => {
            f(a, false);
            f(b, false);
            f(dst, true);
        }
        Op::ToF64 { dst, a }
        | Op::IsNull { dst, a, .. }
        | Op::Like { dst, a, .. }
        | Op::In { dst, a, .. }
        | Op::Not { dst, a }
        | Op::Extract { dst, a, .. } => {
            f(a, false);
            f(dst, true);
        }
        Op::JumpIf { cond, .. } => f(cond, false),
        Op::Jump { .. } | Op::Skip | Op::Return | Op::Aggregate => {}
    }
}

/// Calls `f` on each slot a terminator reads: outputs for `return`, keys and arguments for
/// `aggregate`.
fn terminator_reads(op: &Op, parts: &mut Parts<'_>, f: &mut impl FnMut(&mut u16)) {
    match op {
        Op::Return => parts.output.iter_mut().for_each(|(slot, _)| f(slot)),
        Op::Aggregate => {
            parts.plan.keys.iter_mut().for_each(|(slot, _)| f(slot));
            parts.plan.aggregates.iter_mut().filter_map(|a| a.arg.as_mut()).for_each(f);
        }
        _ => {}
    }
}

/// Where control can go after `pc`.
fn successors(ops: &[Op], pc: usize) -> [Option<usize>; 2] {
    match ops[pc] {
        Op::Jump { target } => [Some(target as usize), None],
        Op::JumpIf { target, .. } => [Some(pc + 1), Some(target as usize)],
        Op::Skip | Op::Return | Op::Aggregate => [None, None],
        _ => [Some(pc + 1), None],
    }
}

const UNREACHED: usize = usize::MAX;

/// Each op's immediate dominator (the entry's is itself; `UNREACHED` for dead code).
fn dominators(ops: &[Op]) -> Vec<usize> {
    let mut idom = vec![UNREACHED; ops.len()];
    idom[0] = 0;
    for pc in 0..ops.len() {
        if idom[pc] == UNREACHED {
            continue;
        }
        for next in successors(ops, pc).into_iter().flatten() {
            idom[next] =
                if idom[next] == UNREACHED { pc } else { intersect(&idom, idom[next], pc) };
        }
    }
    idom
}

/// The nearest common dominator of `a` and `b` (both reached, so their chains end at 0).
fn intersect(idom: &[usize], mut a: usize, mut b: usize) -> usize {
    while a != b {
        if a > b {
            a = idom[a];
        } else {
            b = idom[b];
        }
    }
    a
}

/// Whether every path to `reader` passes `writer` first.
fn dominates(idom: &[usize], writer: usize, reader: usize) -> bool {
    if idom[reader] == UNREACHED {
        return true;
    }
    let mut at = reader;
    while at > writer {
        at = idom[at];
    }
    at == writer && reader != writer
}

/// Per register: the field it can become, or `NO_FIELD`.
fn aliases(parts: &mut Parts<'_>) -> Vec<u16> {
    let registers = parts.registers;
    // Per register: the op that loads it when that is its only writer (NO_WRITER: none yet,
    // MANY: some other or several).
    const NO_WRITER: usize = usize::MAX;
    const MANY: usize = usize::MAX - 1;
    let mut writer = vec![NO_WRITER; registers];
    for (pc, op) in parts.ops.iter_mut().enumerate() {
        let is_load = matches!(op, Op::Copy { src, .. } if usize::from(*src) >= registers);
        operands(op, &mut |slot, write| {
            let r = usize::from(*slot);
            if write && r < registers {
                writer[r] = if writer[r] == NO_WRITER && is_load { pc } else { MANY };
            }
        });
    }
    let idom = dominators(parts.ops);
    let mut ok: Vec<bool> = writer.iter().map(|w| *w < MANY).collect();
    let mut check = |slot: &mut u16, reader: usize| {
        let r = usize::from(*slot);
        if r < registers && ok[r] && !dominates(&idom, writer[r], reader) {
            ok[r] = false;
        }
    };
    for pc in 0..parts.ops.len() {
        let mut op = parts.ops[pc];
        operands(&mut op, &mut |slot, write| {
            if !write {
                check(slot, pc);
            }
        });
        terminator_reads(&op, parts, &mut |slot| check(slot, pc));
    }
    (0..registers)
        .map(|r| match parts.ops.get(writer[r]) {
            Some(Op::Copy { src, .. }) if ok[r] => *src,
            _ => NO_FIELD,
        })
        .collect()
}

/// Applies the optimisation (see the module comment).
pub(super) fn optimize(parts: &mut Parts<'_>) {
    let alias = aliases(parts);
    let rename = |slot: &mut u16| {
        if let Some(&field) = alias.get(usize::from(*slot)) {
            if field != NO_FIELD {
                *slot = field;
            }
        }
    };
    // Drop the aliased loads, renaming what remains and moving jump targets.
    let mut kept = Vec::with_capacity(parts.ops.len());
    let mut origins = Vec::with_capacity(parts.ops.len());
    let mut new_index = Vec::with_capacity(parts.ops.len());
    for (pc, op) in parts.ops.iter().enumerate() {
        new_index.push(kept.len() as u32);
        if let Op::Copy { dst, .. } = op {
            if alias.get(usize::from(*dst)).is_some_and(|f| *f != NO_FIELD) {
                continue;
            }
        }
        let mut op = *op;
        operands(&mut op, &mut |slot, _| rename(slot));
        kept.push(op);
        origins.push(parts.origins[pc]);
    }
    for op in &mut kept {
        if let Op::Jump { target } | Op::JumpIf { target, .. } = op {
            *target = new_index[*target as usize];
        }
    }
    *parts.ops = kept;
    *parts.origins = origins;
    parts.output.iter_mut().for_each(|(slot, _)| rename(slot));
    parts.plan.keys.iter_mut().for_each(|(slot, _)| rename(slot));
    parts.plan.aggregates.iter_mut().filter_map(|a| a.arg.as_mut()).for_each(rename);
    renumber(parts);
}

/// Numbers the slots still used densely, in their old order, and stops the walk at the last
/// column still read.
fn renumber(parts: &mut Parts<'_>) {
    let mut used = vec![false; *parts.slots];
    let mut mark = |slot: &mut u16| used[usize::from(*slot)] = true;
    for op in parts.ops.iter_mut() {
        operands(op, &mut |slot, _| mark(slot));
    }
    parts.output.iter_mut().for_each(|(slot, _)| mark(slot));
    parts.plan.keys.iter_mut().for_each(|(slot, _)| mark(slot));
    parts.plan.aggregates.iter_mut().filter_map(|a| a.arg.as_mut()).for_each(&mut mark);
    let mut number = vec![NO_FIELD; used.len()];
    let mut next = 0u16;
    for (slot, is_used) in used.iter().enumerate() {
        if *is_used {
            number[slot] = next;
            next += 1;
        }
    }
    let renumber = |slot: &mut u16| *slot = number[usize::from(*slot)];
    for op in parts.ops.iter_mut() {
        operands(op, &mut |slot, _| renumber(slot));
    }
    parts.output.iter_mut().for_each(|(slot, _)| renumber(slot));
    parts.plan.keys.iter_mut().for_each(|(slot, _)| renumber(slot));
    parts.plan.aggregates.iter_mut().filter_map(|a| a.arg.as_mut()).for_each(renumber);
    for step in parts.steps.iter_mut() {
        if step.field != NO_FIELD {
            step.field = number[usize::from(step.field)];
        }
    }
    let last_read = parts.steps.iter().rposition(|s| s.field != NO_FIELD).map_or(0, |c| c + 1);
    parts.steps.truncate(last_read);
    *parts.slots = usize::from(next);
}
