//! Linearizability checking of single-key register histories.
//!
//! This module owns the checker that decides whether a recorded history of reads, writes and
//! compare-and-sets against a key-value store could have come from one atomic register per
//! key and, when it could not, the search for a small sub-history that shows why. Std only.
//!
//! The algorithm:
//!
//! * P-compositionality, as in Porcupine (Athalye, 2017): linearizability is local, so the
//!   history is split by key and each key's register is checked on its own.
//! * Wing & Gong's backtracking search ("Testing and verifying concurrent objects", 1993): the
//!   call and return events of a key sit in one time-ordered, doubly linked list. The search
//!   walks it from the front; at a call it tries to linearize that operation now (its output
//!   must be what the register model gives in the current state), lifts the operation's two
//!   events out of the list and starts again from the front; at a return it has found an
//!   operation that must already have taken effect but could not, so it undoes the most
//!   recent choice and tries the next call after it.
//! * Lowe's memoisation ("Testing for linearizability", Concurrency and Computation: Practice
//!   and Experience, 2017): two search nodes with the same set of linearized operations and the
//!   same register state have the same future, so each (linearized set, state) pair is
//!   explored once. The set is a bitset (`Vec<u64>`), stored in the cache compactly as the
//!   register state, the index of its first word that is not all ones, and the words from
//!   there to its last non-zero word: with a handful of concurrent clients that is a few
//!   words however long the history.
//! * Three prunings, each dropping only search nodes that an explored node dominates, keep a
//!   failing history (which the search must exhaust up to where it fails) tractable: a known
//!   operation that cannot change the register (a read, a failed compare-and-set) and fits
//!   the state is linearized at once, with no alternatives tried; unknown operations are
//!   never owed, so a node is skipped if one with the same state and known operations and a
//!   subset of its unknown ones was explored; and unknown operations with the same input are
//!   interchangeable, so the later called is only linearized after the earlier.
//! * Unknown operations make the cache record which of them were used, which multiplies the
//!   states. So a cheap pass goes first that may apply each unknown operation any number of
//!   times and never records it: it admits every linearization the exact search does, so its
//!   failures are final, and only if it passes and there are unknown operations does the
//!   exact search run.
//!
//! Real-time order: operation A precedes operation B iff `A.return_ns < B.call_ns`. Operations
//! whose intervals touch (`A.return_ns == B.call_ns`) are concurrent, so at equal timestamps
//! call events sort before return events.
//!
//! Failed operations (the store said they had no effect) are dropped. Operations with an
//! unknown outcome have no return event: they may be linearized anywhere after their call,
//! their output matches whatever the model gives, and they may be left out altogether (the
//! search succeeds once every operation with a known outcome is linearized). Unknown reads
//! constrain nothing and are dropped too.
//!
//! On a violation, the failing key's history is first cut to the operations called no later
//! than the return of the operation (the culprit) at which the deepest search got stuck:
//! nothing called later can be needed to get there (the cut is checked to still fail, as
//! every cut during minimisation is). It is then shrunk greedily, latest operations first, by removing runs
//! of operations, halving the run length down to one, then single operations until none can
//! go. A removal is kept only if what is left still fails and is grounded: every value an
//! operation in it saw is the initial one, written by an operation in it, or written by no
//! operation of the key's history. Without that, dropping the write a stale read saw would
//! leave the read alone, "read 5, which nobody wrote", in place of "read 5 after 7 was
//! written over it". Until the single removals run dry, a removal must also leave the search
//! stuck at the same culprit, which is never removed, so that it cannot swap the real anomaly
//! for one it made. The result is not linearizable, and 1-minimal: without any one of its
//! operations it is linearizable or not grounded. Minimisation gets the key's state budget
//! again; if that runs out, the smallest failing history found so far is reported.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::error::Error;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// What a client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Read the key's current value.
    Read,
    /// Set the key to this value.
    Write(i64),
    /// Set the key to `new` if its current value is `expect` (None: the row does not exist).
    CompareAndSet {
        /// The value the key must hold for the write to happen.
        expect: Option<i64>,
        /// The value written when it does.
        new: i64,
    },
}

/// What it was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The value read (None: the row did not exist).
    Read(Option<i64>),
    /// The write took effect.
    Written,
    /// Whether the compare-and-set matched (and so wrote).
    CompareAndSet(bool),
    /// The call failed with an error that says it had no effect (aborted): it is dropped from
    /// the history.
    Failed,
    /// The outcome is unknown (timeout, node failure): it may or may not have taken effect, at
    /// any point after its call; treat it as never returning (return time = infinity) and as
    /// possibly not having happened at all.
    Unknown,
}

/// One call of one client against one key, with its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that made the call; clients are sequential.
    pub client: u32,
    /// The key the call was about.
    pub key: u64,
    /// When the call was made, in nanoseconds on a clock shared by all clients.
    pub call_ns: u64,
    /// When the outcome arrived; ignored when the output is [`Output::Unknown`].
    pub return_ns: u64,
    /// What was asked.
    pub input: Input,
    /// What was answered.
    pub output: Output,
}

/// A key whose history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: u64,
    /// A minimal sub-history of this key that is still not linearizable (every op of it
    /// needed: without it, the rest is linearizable or reads a value only left-out operations
    /// wrote), sorted by call time. See the module documentation.
    pub minimal: Vec<Operation>,
    /// How many operations of this key were checked.
    pub operations_for_key: usize,
}

/// Why a history did not pass.
#[derive(Debug)]
pub enum CheckError {
    /// A key's history is not linearizable.
    Violation(Violation),
    /// An operation of the input cannot be checked.
    Malformed {
        /// Its index in the history.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A key has more operations than the checker accepts.
    TooLarge {
        /// The key.
        key: u64,
        /// How many operations it has.
        operations: usize,
        /// The most accepted.
        limit: usize,
    },
    /// The search of a key explored its whole state budget without an answer.
    Budget {
        /// The key.
        key: u64,
        /// How many states were explored.
        states: u64,
    },
}

/// What a successful check looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// How many keys were checked.
    pub keys: usize,
    /// How many operations were checked (failed ones and unknown reads are not counted).
    pub operations: usize,
    /// How many (linearized set, state) pairs the searches explored, over all keys.
    pub states_explored: u64,
}

/// Bounds on the work [`check_with_limits`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A key with more operations than this is refused with [`CheckError::TooLarge`].
    pub max_operations_per_key: usize,
    /// A key's search that explores more states than this stops with [`CheckError::Budget`];
    /// minimising a violation gets the same budget again, and stops shrinking when it is spent.
    pub max_states_per_key: u64,
}

impl Default for Limits {
    /// 100,000 operations and 20 million states per key.
    fn default() -> Self {
        Limits { max_operations_per_key: 100_000, max_states_per_key: 20_000_000 }
    }
}

/// Checks that `history` is linearizable for a register per key starting at `initial`
/// (None: absent), with the default [`Limits`].
///
/// # Errors
///
/// As [`check_with_limits`].
pub fn check(history: &[Operation], initial: Option<i64>) -> Result<CheckReport, CheckError> {
    check_with_limits(history, initial, &Limits::default())
}

/// Checks that `history` is linearizable for a register per key starting at `initial`, within
/// `limits`. Keys are checked in ascending order; the first failing one is reported.
///
/// # Errors
///
/// [`CheckError::Malformed`] for the first operation that returned before its call (unless
/// its outcome is unknown) or whose output does not answer its input;
/// [`CheckError::TooLarge`] for a key with more operations than the limit, before any search;
/// [`CheckError::Violation`] for a key that is not linearizable, with a minimal history;
/// [`CheckError::Budget`] for a key whose search ran out of states.
pub fn check_with_limits(
    history: &[Operation],
    initial: Option<i64>,
    limits: &Limits,
) -> Result<CheckReport, CheckError> {
    let keys = split_by_key(history)?;
    for (&key, operations) in &keys {
        if operations.len() > limits.max_operations_per_key {
            let limit = limits.max_operations_per_key;
            return Err(CheckError::TooLarge { key, operations: operations.len(), limit });
        }
    }
    let mut report = CheckReport { keys: keys.len(), operations: 0, states_explored: 0 };
    for (&key, operations) in &keys {
        let search = search(operations, initial, limits.max_states_per_key);
        report.operations += operations.len();
        report.states_explored += search.states;
        match search.outcome {
            Outcome::Linearizable => {}
            Outcome::Exhausted => return Err(CheckError::Budget { key, states: search.states }),
            Outcome::Stuck { culprit } => {
                let minimal = minimise(operations, initial, culprit, limits.max_states_per_key);
                let operations_for_key = operations.len();
                return Err(CheckError::Violation(Violation { key, minimal, operations_for_key }));
            }
        }
    }
    Ok(report)
}

/// Gives the register state after `input` answered with `output` in `state`, or None if the
/// register could not have given that answer. An unknown output matches whatever happens.
#[must_use]
pub fn apply(state: Option<i64>, input: Input, output: Output) -> Option<Option<i64>> {
    match (input, output) {
        (Input::Read, Output::Read(value)) => (value == state).then_some(state),
        (Input::Read, Output::Unknown) => Some(state),
        (Input::Write(value), Output::Written | Output::Unknown) => Some(Some(value)),
        (Input::CompareAndSet { expect, new }, Output::CompareAndSet(swapped)) => {
            let matches = state == expect;
            (matches == swapped).then_some(if matches { Some(new) } else { state })
        }
        (Input::CompareAndSet { expect, new }, Output::Unknown) => {
            Some(if state == expect { Some(new) } else { state })
        }
        _ => None,
    }
}

/// Validates every operation and groups the ones to check by key, in input order.
fn split_by_key(history: &[Operation]) -> Result<BTreeMap<u64, Vec<Operation>>, CheckError> {
    let mut keys: BTreeMap<u64, Vec<Operation>> = BTreeMap::new();
    for (index, operation) in history.iter().enumerate() {
        if let Some(reason) = malformation(operation) {
            return Err(CheckError::Malformed { index, reason });
        }
        let unknown_read = operation.input == Input::Read && operation.output == Output::Unknown;
        if operation.output != Output::Failed && !unknown_read {
            keys.entry(operation.key).or_default().push(*operation);
        }
    }
    Ok(keys)
}

/// Says what makes `operation` impossible to check, if anything.
fn malformation(operation: &Operation) -> Option<String> {
    let Operation { call_ns, return_ns, input, output, .. } = *operation;
    if output != Output::Unknown && return_ns < call_ns {
        return Some(format!("returned at {return_ns} ns, before its call at {call_ns} ns"));
    }
    let fits = matches!(
        (input, output),
        (_, Output::Failed | Output::Unknown)
            | (Input::Read, Output::Read(_))
            | (Input::Write(_), Output::Written)
            | (Input::CompareAndSet { .. }, Output::CompareAndSet(_))
    );
    (!fits).then(|| format!("output {output} does not answer input {input}"))
}

/// How one key's search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Every operation with a known outcome was linearized.
    Linearizable,
    /// No linearization exists. The deepest search got stuck at the return of `culprit` (None
    /// only if it ran off the end of the list), so the operations called by then are already
    /// not linearizable.
    Stuck { culprit: Option<Operation> },
    /// The state budget ran out first.
    Exhausted,
}

/// The result of one key's search.
#[derive(Clone, Copy, Debug)]
struct SearchResult {
    outcome: Outcome,
    states: u64,
}

/// Searches for a linearization of `operations`, all of one key, exploring at most `budget`
/// states.
///
/// First with unknown operations reusable (see [`Search::reuse_unknown`]), which is cheap and
/// admits every linearization the exact search does, so its failures are real; if that
/// passes and there are unknown operations, the exact search decides.
fn search(operations: &[Operation], initial: Option<i64>, budget: u64) -> SearchResult {
    let mut relaxed = Search::new(operations, true);
    let outcome = relaxed.run(initial, budget);
    let states = relaxed.states;
    if outcome != Outcome::Linearizable || relaxed.known == relaxed.operations.len() {
        return SearchResult { outcome, states };
    }
    let mut exact = Search::new(operations, false);
    let outcome = exact.run(initial, budget.saturating_sub(states));
    SearchResult { outcome, states: states + exact.states }
}

/// The list node at the front of the event list.
const HEAD: usize = 0;
/// The list node at the back of the event list.
const TAIL: usize = 1;

/// What a node of the event list stands for.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// One of the two ends of the list.
    End,
    /// The call of an operation, and the node of its return (None: the outcome is unknown).
    Call { operation: usize, return_node: Option<usize> },
    /// The return of an operation.
    Return { operation: usize },
}

/// A node of the doubly linked event list.
#[derive(Clone, Copy, Debug)]
struct Node {
    event: Event,
    previous: usize,
    next: usize,
}

/// A choice the search made and may undo: the call it linearized, the state before it,
/// whether it was forced (see [`Search::arrive`]), and whether the call was lifted out of the
/// list (not when an unknown operation is applied for reuse).
#[derive(Clone, Copy, Debug)]
struct Choice {
    call_node: usize,
    state: Option<i64>,
    forced: bool,
    lifted: bool,
}

/// Where the search is: the register state, the choices that led there, and how many known
/// operations are not linearized yet.
#[derive(Debug)]
struct Path {
    state: Option<i64>,
    choices: Vec<Choice>,
    remaining: usize,
}

/// Whether every bit of `small` is set in `large` (both the same length).
fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small.iter().zip(large).all(|(small, large)| small & !large == 0)
}

/// Whether the operation can never change the register: wherever its output fits, the state
/// after it is the state before.
fn is_pure(input: Input, output: Output) -> bool {
    match (input, output) {
        (Input::Read, _) | (Input::CompareAndSet { .. }, Output::CompareAndSet(false)) => true,
        (Input::CompareAndSet { expect, new }, Output::CompareAndSet(true)) => expect == Some(new),
        _ => false,
    }
}

/// A hasher for words: a multiply-rotate mix per word and a final avalanche.
#[derive(Default)]
struct WordHasher {
    hash: u64,
}

impl WordHasher {
    fn mix(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(26) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.mix(word);
    }

    fn write_usize(&mut self, word: usize) {
        self.mix(word as u64);
    }

    fn finish(&self) -> u64 {
        let mut hash = self.hash;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash
    }
}

/// Explored search nodes: for each known part of a linearized set with a state, the unknown
/// parts explored with it (none of them a subset of another).
type Cache = HashMap<Box<[u64]>, Vec<Box<[u64]>>, BuildHasherDefault<WordHasher>>;

/// The search state for one key.
struct Search {
    /// The key's operations: the ones with a known outcome first, by call time, then the
    /// unknown ones by call time.
    operations: Vec<Operation>,
    /// How many operations have a known outcome.
    known: usize,
    /// Unknown operations are never lifted, only applied, as often as the search likes: an
    /// over-approximation that keeps the cache free of which ones were used.
    reuse_unknown: bool,
    /// For each unknown operation, the one called latest before it with the same input. Two
    /// such are interchangeable once both are called, so the later is only linearized after
    /// the earlier (symmetry reduction).
    twins: Vec<Option<usize>>,
    /// The event list; `HEAD` and `TAIL` are its ends.
    nodes: Vec<Node>,
    /// Which operations are linearized: known ones from bit 0, unknown ones from word
    /// `known_words`.
    linearized: Vec<u64>,
    /// How many words hold the known operations' bits.
    known_words: usize,
    /// Every known word before this one is all ones.
    first_gap_word: usize,
    /// Every known word from this one on is zero.
    end_word: usize,
    /// The (linearized set, state) pairs explored: by the known part of the set and the
    /// state, the unknown parts (see [`Search::remember`]).
    cache: Cache,
    /// How many pairs were explored.
    states: u64,
}

impl Search {
    /// Orders `operations` and builds their event list.
    fn new(operations: &[Operation], reuse_unknown: bool) -> Self {
        let mut ordered: Vec<Operation> = operations.to_vec();
        ordered.sort_by_key(|operation| {
            (operation.output == Output::Unknown, operation.call_ns, operation.return_ns)
        });
        let known = ordered.iter().take_while(|operation| operation.output != Output::Unknown);
        let known = known.count();
        let known_words = known.div_ceil(64);
        let words = known_words + (ordered.len() - known).div_ceil(64);
        let nodes = event_list(&ordered, known);
        let twins = twins(&ordered, known);
        Search {
            operations: ordered,
            known,
            reuse_unknown,
            twins,
            nodes,
            linearized: vec![0; words],
            known_words,
            first_gap_word: 0,
            end_word: 0,
            cache: HashMap::default(),
            states: 0,
        }
    }

    /// Runs the backtracking search from `initial`, exploring at most `budget` states.
    fn run(&mut self, initial: Option<i64>, budget: u64) -> Outcome {
        let mut path = Path { state: initial, choices: Vec::new(), remaining: self.known };
        let mut deepest: Option<(usize, usize)> = None;
        let mut next = self.arrive(&mut path);
        while path.remaining > 0 {
            if self.states > budget {
                return Outcome::Exhausted;
            }
            let Some(node) = next.or_else(|| self.backtrack(&mut path)) else {
                let culprit = deepest.and_then(|(_, node)| self.returning(node));
                return Outcome::Stuck { culprit };
            };
            let event = self.nodes[node].event;
            next = match event {
                Event::Call { .. } if self.lift_if_new(&mut path, node, false) => {
                    self.arrive(&mut path)
                }
                Event::Call { .. } => Some(self.nodes[node].next),
                Event::Return { .. } | Event::End => {
                    let depth = self.known - path.remaining;
                    if deepest.map_or(true, |(deepest_depth, _)| depth > deepest_depth) {
                        deepest = Some((depth, node));
                    }
                    None
                }
            };
        }
        Outcome::Linearizable
    }

    /// Settles a newly reached search node: while a pending call of a known operation that
    /// cannot change the register fits the state, that call is lifted, as a forced choice.
    /// Gives the node to walk the list from, or None if this search node is known to fail.
    ///
    /// Such an operation (a read, a compare-and-set that failed, one that set the value it
    /// expected) dominates: any way to finish without linearizing it now also finishes with it
    /// linearized now, as leaving it out of the rest of the order changes no state. So if the
    /// search node with it lifted was already explored, this one fails too.
    fn arrive(&mut self, path: &mut Path) -> Option<usize> {
        while path.remaining > 0 {
            let Some(node) = self.pure_call(path.state) else { break };
            if !self.lift_if_new(path, node, true) {
                return None;
            }
        }
        Some(self.nodes[HEAD].next)
    }

    /// The first pending call of a known, register-preserving operation that fits `state`.
    fn pure_call(&self, state: Option<i64>) -> Option<usize> {
        let mut node = self.nodes[HEAD].next;
        while let Event::Call { operation, return_node } = self.nodes[node].event {
            let Operation { input, output, .. } = self.operations[operation];
            if return_node.is_some()
                && is_pure(input, output)
                && apply(state, input, output).is_some()
            {
                return Some(node);
            }
            node = self.nodes[node].next;
        }
        None
    }

    /// Linearizes the operation called at `node` if it fits the state and the search node
    /// that leads to is new; says whether it did.
    fn lift_if_new(&mut self, path: &mut Path, node: usize, forced: bool) -> bool {
        let Event::Call { operation, return_node } = self.nodes[node].event else {
            return false;
        };
        let Operation { input, output, .. } = self.operations[operation];
        let Some(next_state) = apply(path.state, input, output) else {
            return false;
        };
        let reuse = self.reuse_unknown && return_node.is_none();
        let new = if reuse {
            next_state != path.state && self.explore(next_state)
        } else {
            self.twin_linearized(operation) && self.remember(operation, next_state)
        };
        if !new {
            return false;
        }
        path.choices.push(Choice { call_node: node, state: path.state, forced, lifted: !reuse });
        path.state = next_state;
        if !reuse {
            self.lift(node, return_node);
            path.remaining -= usize::from(return_node.is_some());
        }
        true
    }

    /// Whether the twin called before `operation`, if any, is linearized.
    fn twin_linearized(&self, operation: usize) -> bool {
        self.twins.get(operation).copied().flatten().map_or(true, |twin| {
            let (word, mask) = self.bit(twin);
            self.linearized[word] & mask != 0
        })
    }

    /// Undoes choices up to and including the latest free one (a forced choice failing means
    /// the search node that forced it fails); gives the node after that choice's call to walk
    /// on from, or None if there is none left.
    fn backtrack(&mut self, path: &mut Path) -> Option<usize> {
        while let Some(choice) = path.choices.pop() {
            path.state = choice.state;
            if choice.lifted {
                path.remaining += self.unlift(choice.call_node);
            }
            if !choice.forced {
                return Some(self.nodes[choice.call_node].next);
            }
        }
        None
    }

    /// The operation whose return is at `node`, if that is a return.
    fn returning(&self, node: usize) -> Option<Operation> {
        match self.nodes[node].event {
            Event::Return { operation } => Some(self.operations[operation]),
            _ => None,
        }
    }

    /// The bit of `operation` in `linearized`: its word and mask.
    fn bit(&self, operation: usize) -> (usize, u64) {
        let index = if operation < self.known {
            operation
        } else {
            self.known_words * 64 + (operation - self.known)
        };
        (index / 64, 1 << (index % 64))
    }

    /// Marks `operation` linearized with the register at `state` after it, and says whether
    /// that pair is new; if not, the mark is undone.
    fn remember(&mut self, operation: usize, state: Option<i64>) -> bool {
        let (word, mask) = self.bit(operation);
        self.linearized[word] |= mask;
        if word < self.known_words {
            self.end_word = self.end_word.max(word + 1);
        }
        let new = self.explore(state);
        if !new {
            self.clear(operation);
        }
        new
    }

    /// Records the current linearized set with `state` as explored, and says whether it is
    /// new. It is not new either if a pair with the same state, the same known operations and
    /// a subset of its unknown ones was explored: unknown operations are never owed, so having
    /// fewer of them used up leaves at least the same ways on.
    fn explore(&mut self, state: Option<i64>) -> bool {
        let key = self.known_key(state);
        let unknown = &self.linearized[self.known_words..];
        let new = match self.cache.entry(key) {
            Entry::Vacant(vacant) => {
                vacant.insert(vec![unknown.into()]);
                true
            }
            Entry::Occupied(mut occupied) => {
                let explored = occupied.get_mut();
                let dominated = explored.iter().any(|used| is_subset(used, unknown));
                if !dominated {
                    explored.retain(|used| !is_subset(unknown, used));
                    explored.push(unknown.into());
                }
                !dominated
            }
        };
        self.states += u64::from(new);
        new
    }

    /// Marks `operation` not linearized.
    fn clear(&mut self, operation: usize) {
        let (word, mask) = self.bit(operation);
        self.linearized[word] &= !mask;
        if word < self.known_words {
            self.first_gap_word = self.first_gap_word.min(word);
        }
    }

    /// The cache's compact form of the known part of the linearized set and `state`: the
    /// first known word that is not all ones and the state, then the known words from there
    /// to the last non-zero one.
    fn known_key(&mut self, state: Option<i64>) -> Box<[u64]> {
        while self.first_gap_word < self.known_words
            && self.linearized[self.first_gap_word] == self.full_word(self.first_gap_word)
        {
            self.first_gap_word += 1;
        }
        while self.end_word > self.first_gap_word && self.linearized[self.end_word - 1] == 0 {
            self.end_word -= 1;
        }
        let window = self.first_gap_word..self.end_word.max(self.first_gap_word);
        let mut key = Vec::with_capacity(2 + window.len());
        key.push((self.first_gap_word as u64) << 1 | u64::from(state.is_some()));
        key.push(state.map_or(0, |value| value as u64));
        key.extend_from_slice(&self.linearized[window]);
        key.into_boxed_slice()
    }

    /// Known word `word` with every known operation in it linearized.
    fn full_word(&self, word: usize) -> u64 {
        let bits = self.known - word * 64;
        if bits >= 64 {
            u64::MAX
        } else {
            (1 << bits) - 1
        }
    }

    /// Takes a call and its return (if any) out of the event list.
    fn lift(&mut self, call_node: usize, return_node: Option<usize>) {
        self.unlink(call_node);
        if let Some(return_node) = return_node {
            self.unlink(return_node);
        }
    }

    /// Puts a lifted call and its return back, marks its operation not linearized, and gives
    /// how many known operations that makes unlinearized again (0 or 1).
    fn unlift(&mut self, call_node: usize) -> usize {
        let Event::Call { operation, return_node } = self.nodes[call_node].event else {
            return 0;
        };
        if let Some(return_node) = return_node {
            self.relink(return_node);
        }
        self.relink(call_node);
        self.clear(operation);
        usize::from(return_node.is_some())
    }

    fn unlink(&mut self, node: usize) {
        let Node { previous, next, .. } = self.nodes[node];
        self.nodes[previous].next = next;
        self.nodes[next].previous = previous;
    }

    fn relink(&mut self, node: usize) {
        let Node { previous, next, .. } = self.nodes[node];
        self.nodes[previous].next = node;
        self.nodes[next].previous = node;
    }
}

/// Builds the time-ordered event list of `operations`, whose first `known` have a return.
/// At equal times calls come first, so operations whose intervals touch are concurrent.
fn event_list(operations: &[Operation], known: usize) -> Vec<Node> {
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(operations.len() + known);
    for (index, operation) in operations.iter().enumerate() {
        events.push((operation.call_ns, false, index));
        if index < known {
            events.push((operation.return_ns, true, index));
        }
    }
    events.sort_unstable();
    let mut return_nodes = vec![None; operations.len()];
    for (position, &(_, is_return, operation)) in events.iter().enumerate() {
        if is_return {
            return_nodes[operation] = Some(position + 2);
        }
    }
    let count = events.len() + 2;
    let mut nodes = vec![
        Node { event: Event::End, previous: TAIL, next: 2 },
        Node { event: Event::End, previous: count - 1, next: HEAD },
    ];
    for (position, &(_, is_return, operation)) in events.iter().enumerate() {
        let event = if is_return {
            Event::Return { operation }
        } else {
            Event::Call { operation, return_node: return_nodes[operation] }
        };
        let node = position + 2;
        let next = if node + 1 == count { TAIL } else { node + 1 };
        nodes.push(Node { event, previous: if node == 2 { HEAD } else { node - 1 }, next });
    }
    if events.is_empty() {
        nodes[HEAD].next = TAIL;
        nodes[TAIL].previous = HEAD;
    }
    nodes
}

/// For each of `operations`, whose first `known` have a known outcome, the unknown operation
/// with the same input called latest before it, if it is unknown too.
fn twins(operations: &[Operation], known: usize) -> Vec<Option<usize>> {
    let mut latest: HashMap<(u8, Option<i64>, i64), usize> = HashMap::new();
    let mut twins = vec![None; operations.len()];
    for (index, operation) in operations.iter().enumerate().skip(known) {
        let input = match operation.input {
            Input::Read => (0, None, 0),
            Input::Write(value) => (1, None, value),
            Input::CompareAndSet { expect, new } => (2, expect, new),
        };
        twins[index] = latest.insert(input, index);
    }
    twins
}

/// Shrinks a key's non-linearizable history, whose search got stuck at `culprit`, to a
/// 1-minimal one that is still not linearizable, spending at most `budget` states.
///
/// A removal is kept only if what is left still fails and is grounded (see
/// [`Minimiser::grounded`]), so that removing the write a read saw cannot turn that read into
/// the whole story. The first phase also requires the search to still get stuck at the same
/// culprit, and never removes it, so that a removal cannot swap the real anomaly for one it
/// made; the second phase drops that requirement, for 1-minimality.
fn minimise(
    operations: &[Operation],
    initial: Option<i64>,
    culprit: Option<Operation>,
    budget: u64,
) -> Vec<Operation> {
    let written_anywhere = operations.iter().filter_map(written_value).collect();
    let mut minimiser =
        Minimiser { initial, keep: culprit, written_anywhere, budget, exhausted: false };
    let mut current = operations.to_vec();
    current.sort_by_key(|operation| (operation.call_ns, operation.return_ns, operation.client));
    if let Some(window) = minimiser.accept(current.clone()) {
        current = window;
    }
    let mut run = (current.len() / 2).max(1);
    loop {
        let removed = minimiser.pass(&mut current, run);
        if minimiser.exhausted {
            return current;
        }
        if run == 1 && !removed {
            if minimiser.keep.is_none() {
                return current;
            }
            minimiser.keep = None;
        }
        run = (run / 2).max(1);
    }
}

/// The value `operation` may have written, if any.
fn written_value(operation: &Operation) -> Option<i64> {
    match (operation.input, operation.output) {
        (Input::Write(value), _) => Some(value),
        (Input::CompareAndSet { new, .. }, Output::CompareAndSet(true) | Output::Unknown) => {
            Some(new)
        }
        _ => None,
    }
}

/// The value `operation` saw in the register, if it saw one.
fn observed_value(operation: &Operation) -> Option<i64> {
    match (operation.input, operation.output) {
        (Input::Read, Output::Read(value)) => value,
        (Input::CompareAndSet { expect, .. }, Output::CompareAndSet(true)) => expect,
        _ => None,
    }
}

/// The state of a minimisation.
struct Minimiser {
    initial: Option<i64>,
    /// The operation the search must still get stuck at, and that is not removed (None: any
    /// failure will do).
    keep: Option<Operation>,
    /// Every value some operation of the key's whole history may have written.
    written_anywhere: HashSet<i64>,
    /// States left to explore.
    budget: u64,
    /// The budget ran out.
    exhausted: bool,
}

impl Minimiser {
    /// Tries removing each run of `run` consecutive operations (but the kept one), latest
    /// first, keeping every removal `accept` takes; says whether any was kept.
    fn pass(&mut self, current: &mut Vec<Operation>, run: usize) -> bool {
        let mut removed = false;
        let mut end = current.len();
        while end > 0 && !self.exhausted {
            let start = end.saturating_sub(run);
            let candidate: Vec<Operation> = (current.iter().enumerate())
                .filter(|&(index, operation)| {
                    !(start..end).contains(&index) || Some(*operation) == self.keep
                })
                .map(|(_, operation)| *operation)
                .collect();
            if candidate.len() < current.len() {
                if let Some(accepted) = self.accept(candidate) {
                    *current = accepted;
                    removed = true;
                }
            }
            end = start.min(current.len());
        }
        removed
    }

    /// Takes `candidate` if it is grounded and fails as it must, cut to the operations called
    /// by the return of the operation its search got stuck at when that is grounded and
    /// fails as it must too.
    fn accept(&mut self, candidate: Vec<Operation>) -> Option<Vec<Operation>> {
        if !self.grounded(&candidate) {
            return None;
        }
        let culprit = self.fails(&candidate)?;
        let horizon_ns = culprit.map_or(u64::MAX, |culprit| culprit.return_ns);
        let window: Vec<Operation> =
            candidate.iter().filter(|operation| operation.call_ns <= horizon_ns).copied().collect();
        let cut = window.len() < candidate.len()
            && self.grounded(&window)
            && self.fails(&window).is_some();
        Some(if cut { window } else { candidate })
    }

    /// Searches `operations`; if it fails as it must (stuck at the kept operation, if any),
    /// gives the operation it got stuck at.
    fn fails(&mut self, operations: &[Operation]) -> Option<Option<Operation>> {
        let result = search(operations, self.initial, self.budget);
        self.budget = self.budget.saturating_sub(result.states);
        match result.outcome {
            Outcome::Stuck { culprit } if self.keep.is_none() || culprit == self.keep => {
                Some(culprit)
            }
            Outcome::Stuck { .. } | Outcome::Linearizable => None,
            Outcome::Exhausted => {
                self.exhausted = true;
                None
            }
        }
    }

    /// Whether every value an operation of `operations` saw is the initial one, written by
    /// one of `operations`, or written by no operation of the key's whole history (a value
    /// out of nowhere needs no writer to show the violation).
    fn grounded(&self, operations: &[Operation]) -> bool {
        let written: HashSet<i64> = operations.iter().filter_map(written_value).collect();
        operations.iter().filter_map(observed_value).all(|value| {
            Some(value) == self.initial
                || written.contains(&value)
                || !self.written_anywhere.contains(&value)
        })
    }
}

/// Writes a value that may be absent.
fn write_value(formatter: &mut fmt::Formatter<'_>, value: Option<i64>) -> fmt::Result {
    match value {
        Some(value) => write!(formatter, "{value}"),
        None => write!(formatter, "absent"),
    }
}

impl fmt::Display for Input {
    /// `read`, `write(3)`, `cas(absent -> 3)`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Input::Read => write!(formatter, "read"),
            Input::Write(value) => write!(formatter, "write({value})"),
            Input::CompareAndSet { expect, new } => {
                write!(formatter, "cas(")?;
                write_value(formatter, expect)?;
                write!(formatter, " -> {new})")
            }
        }
    }
}

impl fmt::Display for Output {
    /// The value read (or `absent`), `ok`, `true`/`false`, `failed`, `unknown`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Output::Read(value) => write_value(formatter, value),
            Output::Written => write!(formatter, "ok"),
            Output::CompareAndSet(swapped) => write!(formatter, "{swapped}"),
            Output::Failed => write!(formatter, "failed"),
            Output::Unknown => write!(formatter, "unknown"),
        }
    }
}

impl fmt::Display for Operation {
    /// `client 3 [100..250] write(7) -> ok`; an unknown outcome's return shows as `?`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "client {} [{}..", self.client, self.call_ns)?;
        if self.output == Output::Unknown {
            write!(formatter, "?")?;
        } else {
            write!(formatter, "{}", self.return_ns)?;
        }
        write!(formatter, "] {} -> {}", self.input, self.output)
    }
}

impl fmt::Display for Violation {
    /// The key, the counts, then the minimal history one operation per line by call time.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "key {}: the history of {} operations is not linearizable; these {} show it:",
            self.key,
            self.operations_for_key,
            self.minimal.len()
        )?;
        let mut minimal: Vec<&Operation> = self.minimal.iter().collect();
        minimal.sort_by_key(|operation| (operation.call_ns, operation.return_ns));
        for operation in minimal {
            write!(formatter, "\n  {operation}")?;
        }
        Ok(())
    }
}

impl Error for Violation {}

impl fmt::Display for CheckError {
    /// One line per problem; a violation adds its minimal history.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Violation(violation) => write!(formatter, "{violation}"),
            CheckError::Malformed { index, reason } => {
                write!(formatter, "operation {index} is malformed: {reason}")
            }
            CheckError::TooLarge { key, operations, limit } => {
                write!(formatter, "key {key} has {operations} operations, more than {limit}")
            }
            CheckError::Budget { key, states } => {
                write!(formatter, "key {key}: gave up after exploring {states} states")
            }
        }
    }
}

impl Error for CheckError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CheckError::Violation(violation) => Some(violation),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A deterministic pseudo-random generator (splitmix64).
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    fn operation(
        client: u32,
        call_ns: u64,
        return_ns: u64,
        input: Input,
        output: Output,
    ) -> Operation {
        Operation { client, key: 0, call_ns, return_ns, input, output }
    }

    fn write(client: u32, call_ns: u64, return_ns: u64, value: i64) -> Operation {
        operation(client, call_ns, return_ns, Input::Write(value), Output::Written)
    }

    fn read(client: u32, call_ns: u64, return_ns: u64, value: Option<i64>) -> Operation {
        operation(client, call_ns, return_ns, Input::Read, Output::Read(value))
    }

    fn cas(
        client: u32,
        span: (u64, u64),
        expect: Option<i64>,
        new: i64,
        swapped: bool,
    ) -> Operation {
        let input = Input::CompareAndSet { expect, new };
        operation(client, span.0, span.1, input, Output::CompareAndSet(swapped))
    }

    fn violation(result: Result<CheckReport, CheckError>) -> Violation {
        match result {
            Err(CheckError::Violation(violation)) => violation,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    /// Whether some order of `history` (one key) explains it, by trying every order.
    fn brute_force(history: &[Operation], initial: Option<i64>) -> bool {
        let operations: Vec<Operation> = history
            .iter()
            .filter(|operation| operation.output != Output::Failed)
            .copied()
            .collect();
        let mut used = vec![false; operations.len()];
        orders_exist(&operations, &mut used, initial)
    }

    fn orders_exist(operations: &[Operation], used: &mut [bool], state: Option<i64>) -> bool {
        let pending = |index: usize, used: &[bool]| {
            !used[index] && operations[index].output != Output::Unknown
        };
        if !(0..operations.len()).any(|index| pending(index, used)) {
            return true;
        }
        for index in 0..operations.len() {
            let blocked = (0..operations.len()).any(|other| {
                pending(other, used) && operations[other].return_ns < operations[index].call_ns
            });
            if used[index] || blocked {
                continue;
            }
            let Operation { input, output, .. } = operations[index];
            if let Some(next) = apply(state, input, output) {
                used[index] = true;
                if orders_exist(operations, used, next) {
                    return true;
                }
                used[index] = false;
            }
        }
        false
    }

    #[test]
    fn sequential_histories_pass() {
        let history = [
            write(1, 0, 10, 1),
            read(2, 20, 30, Some(1)),
            write(2, 40, 50, 2),
            read(1, 60, 70, Some(2)),
            cas(1, (80, 90), Some(2), 3, true),
            cas(2, (100, 110), Some(2), 4, false),
            read(3, 120, 130, Some(3)),
        ];
        let report = check(&history, None).expect("linearizable");
        assert_eq!((report.keys, report.operations), (1, 7));
        assert!(check(&[read(1, 0, 1, None)], None).is_ok());
        assert!(check(&[], None).is_ok());
    }

    #[test]
    fn stale_read_after_completed_write_fails_minimally() {
        // The register starts at 1: the read of 1 after both writes is stale, and the write
        // of 2 that completed before it is what proves that.
        let second = write(2, 20, 30, 2);
        let stale = read(3, 40, 50, Some(1));
        let history = [read(1, 0, 10, Some(1)), second, stale, read(1, 60, 70, Some(2))];
        let found = violation(check(&history, Some(1)));
        assert_eq!(found.minimal, vec![second, stale]);
        assert_eq!(found.operations_for_key, 4);

        let first = write(1, 0, 10, 3);
        let absent = read(2, 20, 30, None);
        let found = violation(check(&[first, read(1, 15, 16, Some(3)), absent], None));
        assert_eq!(found.minimal, vec![first, absent]);

        // Without an initial value, the write of 1 stays: the read of 1 is not the whole story.
        let history = [write(1, 0, 10, 1), read(1, 12, 14, Some(1)), second, stale];
        assert_eq!(violation(check(&history, None)).minimal, vec![history[0], second, stale]);
    }

    #[test]
    fn concurrent_write_and_read_see_either_value() {
        for value in [Some(1), Some(2)] {
            let history = [write(1, 0, 10, 1), write(1, 20, 40, 2), read(2, 25, 35, value)];
            assert!(check(&history, None).is_ok(), "{value:?}");
        }
        // Touching intervals are concurrent.
        assert!(check(&[write(1, 0, 10, 1), read(2, 10, 20, None)], None).is_ok());
        assert!(check(&[write(1, 0, 10, 1), read(2, 11, 20, None)], None).is_err());
    }

    #[test]
    fn concurrent_compare_and_sets_cannot_both_succeed() {
        let first = cas(1, (0, 100), None, 1, true);
        let second = cas(2, (10, 90), None, 2, true);
        let found = violation(check(&[first, second, read(3, 200, 210, Some(2))], None));
        assert_eq!(found.minimal, vec![first, second]);
        let second = cas(2, (10, 90), None, 2, false);
        assert!(check(&[first, second, read(3, 200, 210, Some(1))], None).is_ok());
    }

    #[test]
    fn unknown_and_failed_operations() {
        let unknown = operation(1, 0, 0, Input::Write(5), Output::Unknown);
        assert!(check(&[unknown, read(2, 100, 110, Some(5))], None).is_ok());
        assert!(check(&[unknown, read(2, 100, 110, None)], None).is_ok());
        // Once observed, the unknown write has happened: it cannot be undone.
        let history = [unknown, read(2, 100, 110, Some(5)), read(2, 120, 130, None)];
        assert!(check(&history, None).is_err());
        // An unknown write may land long after its call, even after later writes.
        let history = [unknown, write(2, 50, 60, 6), read(2, 100, 110, Some(5))];
        assert!(check(&history, None).is_ok());
        // It cannot land before its call.
        assert!(check(&[read(2, 0, 10, Some(5)), unknown_at(20)], None).is_err());
        let failed = operation(3, 0, 10, Input::Write(9), Output::Failed);
        let report = check(&[failed, read(2, 20, 30, None)], None).expect("failed ops dropped");
        assert_eq!(report.operations, 1);
        assert!(check(&[failed, read(2, 20, 30, Some(9))], None).is_err());
        // One unknown write cannot explain two reads of its value with a write between.
        let history = [
            unknown,
            write(2, 10, 20, 1),
            read(2, 30, 40, Some(5)),
            write(2, 50, 60, 2),
            read(2, 70, 80, Some(5)),
        ];
        assert_eq!(violation(check(&history, None)).minimal.len(), 4);
        let mut twice = history.to_vec();
        twice.push(unknown_at(5));
        assert!(check(&twice, None).is_ok());
        let unknown_cas =
            operation(1, 0, 0, Input::CompareAndSet { expect: None, new: 4 }, Output::Unknown);
        assert!(check(&[unknown_cas, read(2, 10, 20, Some(4))], None).is_ok());
        assert!(check(&[unknown_cas, read(2, 10, 20, Some(4))], Some(1)).is_err());
    }

    fn unknown_at(call_ns: u64) -> Operation {
        operation(1, call_ns, 0, Input::Write(5), Output::Unknown)
    }

    #[test]
    fn malformed_operations_are_named() {
        let history = [write(1, 0, 10, 1), write(1, 30, 20, 2)];
        match check(&history, None) {
            Err(CheckError::Malformed { index: 1, reason }) => assert!(reason.contains("before")),
            other => panic!("expected malformed, got {other:?}"),
        }
        let history = [operation(1, 0, 10, Input::Read, Output::Written)];
        assert!(matches!(check(&history, None), Err(CheckError::Malformed { index: 0, .. })));
    }

    #[test]
    fn limits_are_errors() {
        let history: Vec<Operation> =
            (0..10).map(|time| write(1, time * 10, time * 10 + 5, 1)).collect();
        let limits = Limits { max_operations_per_key: 5, ..Limits::default() };
        let result = check_with_limits(&history, None, &limits);
        assert!(matches!(result, Err(CheckError::TooLarge { key: 0, operations: 10, limit: 5 })));
        let limits = Limits { max_states_per_key: 3, ..Limits::default() };
        let result = check_with_limits(&history, None, &limits);
        assert!(matches!(result, Err(CheckError::Budget { key: 0, .. })));
    }

    #[test]
    fn display_lists_the_minimal_history() {
        let found = violation(check(&[write(1, 0, 10, 1), read(2, 20, 30, None)], None));
        let text = CheckError::Violation(found).to_string();
        assert_eq!(
            text,
            "key 0: the history of 2 operations is not linearizable; these 2 show it:\n  \
             client 1 [0..10] write(1) -> ok\n  client 2 [20..30] read -> absent"
        );
    }

    /// A random single-key history of a few heavily overlapping operations, not necessarily
    /// linearizable.
    fn random_small_history(random: &mut SplitMix) -> Vec<Operation> {
        let count = 1 + random.below(7);
        (0..count)
            .map(|index| {
                let call_ns = random.below(20);
                let return_ns = call_ns + random.below(10);
                let value = |random: &mut SplitMix| random.below(3) as i64;
                let (input, output) = match random.below(3) {
                    0 => (
                        Input::Read,
                        Output::Read([None, Some(0), Some(1)][random.below(3) as usize]),
                    ),
                    1 => (Input::Write(value(random)), Output::Written),
                    _ => {
                        let expect = [None, Some(0), Some(1)][random.below(3) as usize];
                        (
                            Input::CompareAndSet { expect, new: value(random) },
                            Output::CompareAndSet(random.below(2) == 0),
                        )
                    }
                };
                let output = match random.below(10) {
                    0 | 1 => Output::Unknown,
                    2 => Output::Failed,
                    _ => output,
                };
                operation(index as u32, call_ns, return_ns, input, output)
            })
            .collect()
    }

    #[test]
    fn agrees_with_brute_force_and_minimises() {
        let mut random = SplitMix(7);
        let mut failures = 0;
        for _ in 0..4000 {
            let history = random_small_history(&mut random);
            let result = check(&history, None);
            assert_eq!(result.is_ok(), brute_force(&history, None), "{history:#?}");
            let Err(error) = result else { continue };
            let found = violation(Err(error));
            failures += 1;
            assert!(!brute_force(&found.minimal, None), "{found}");
            let written_anywhere: Vec<i64> = (history.iter())
                .filter(|operation| operation.output != Output::Failed)
                .filter_map(written_value)
                .collect();
            for skip in 0..found.minimal.len() {
                let mut smaller = found.minimal.clone();
                smaller.remove(skip);
                // Without the operation, either no order fits, or something read a value that
                // only operations left out wrote.
                let written: Vec<i64> = smaller.iter().filter_map(written_value).collect();
                let ungrounded = smaller
                    .iter()
                    .filter_map(observed_value)
                    .any(|value| !written.contains(&value) && written_anywhere.contains(&value));
                assert!(ungrounded || brute_force(&smaller, None), "not minimal: {found}");
            }
        }
        assert!(failures > 500, "{failures}");
    }

    /// A linearizable history by construction: `clients` sequential clients doing random
    /// operations on `keys` keys, each applied atomically at a random instant of its interval.
    fn generate(seed: u64, clients: u32, keys: u64, count: usize) -> Vec<Operation> {
        let mut random = SplitMix(seed);
        let mut clocks = vec![0u64; clients as usize];
        let mut history = Vec::with_capacity(count);
        let mut instants = Vec::with_capacity(count);
        for index in 0..count {
            let client = random.below(u64::from(clients)) as u32;
            let call_ns = clocks[client as usize] + 1 + random.below(20);
            let return_ns = call_ns + random.below(100);
            clocks[client as usize] = return_ns;
            let value = random.below(5) as i64;
            let input = match random.below(10) {
                0..=4 => Input::Read,
                5..=7 => Input::Write(value),
                _ => {
                    let expect = random.below(6).checked_sub(1).map(|value| value as i64);
                    Input::CompareAndSet { expect, new: value }
                }
            };
            let key = random.below(keys);
            let instant = call_ns + random.below(return_ns - call_ns + 1);
            instants.push((instant, index, random.below(100)));
            history.push(Operation {
                client,
                key,
                call_ns,
                return_ns,
                input,
                output: Output::Failed,
            });
        }
        instants.sort_unstable();
        let mut registers = vec![None; keys as usize];
        for (_, index, fate) in instants {
            let operation = &mut history[index];
            let register = &mut registers[operation.key as usize];
            if fate < 3 {
                continue; // Failed: no effect.
            }
            let outcome = simulate(*register, operation.input);
            if fate < 6 {
                operation.output = Output::Unknown;
                if fate < 5 {
                    *register = outcome.0;
                }
            } else {
                (*register, operation.output) = outcome;
            }
        }
        history
    }

    /// What an atomic register does.
    fn simulate(state: Option<i64>, input: Input) -> (Option<i64>, Output) {
        match input {
            Input::Read => (state, Output::Read(state)),
            Input::Write(value) => (Some(value), Output::Written),
            Input::CompareAndSet { expect, new } if state == expect => {
                (Some(new), Output::CompareAndSet(true))
            }
            Input::CompareAndSet { .. } => (state, Output::CompareAndSet(false)),
        }
    }

    #[test]
    fn generated_histories_pass_and_corruption_is_found() {
        let started = Instant::now();
        let mut history = generate(42, 8, 3, 2000);
        let report = check(&history, None).expect("linearizable by construction");
        assert_eq!(report.keys, 3);
        eprintln!("generated 2000 ops: {report:?} in {:?}", started.elapsed());

        let corrupted_at = (1000..history.len())
            .find(|&index| matches!(history[index].output, Output::Read(_)))
            .expect("a read");
        history[corrupted_at].output = Output::Read(Some(1_000_000));
        let corrupted = history[corrupted_at];
        let found = violation(check(&history, None));
        eprintln!("{found}");
        assert_eq!(found.key, corrupted.key);
        assert!(found.minimal.contains(&corrupted));
        assert!(found.minimal.len() <= 3, "{found}");
        eprintln!("generated test took {:?}", started.elapsed());
    }

    #[test]
    fn stale_read_in_a_long_concurrent_history_is_found() {
        let started = Instant::now();
        let mut history = generate(9, 8, 1, 5000);
        let report = check(&history, None).expect("linearizable by construction");
        eprintln!("5000 ops, one key: {report:?} in {:?}", started.elapsed());
        // Make a late read say the row is absent, as it was before the first write: nothing
        // deletes, so that is stale.
        let corrupted_at = (4000..history.len())
            .find(|&index| matches!(history[index].output, Output::Read(Some(_))))
            .expect("a read");
        history[corrupted_at].output = Output::Read(None);
        let corrupted = history[corrupted_at];
        let found = violation(check(&history, None));
        eprintln!("{found}\nstale read test took {:?}", started.elapsed());
        assert!(found.minimal.contains(&corrupted), "{found}");
        assert!(found.minimal.len() <= 3, "{found}");
        assert!(!brute_force(&found.minimal, None));
    }
}
