//! The engine's signals, declared once for the data node and the client: client <->
//! coordinator (key operations and execute), coordinator <-> storage (the linear two-phase
//! commit), client <-> dictionary and dictionary <-> dictionary (schema changes in two phases),
//! and the replica checksum. Each request is answered by one confirm or one refuse carrying an
//! [`ErrorCode`](crate::ErrorCode) (NDB's REQ / CONF / REF).
//!
//! Every payload is a `#[repr(C)]` struct of 32-bit words; keys, attribute lists, rows and
//! messages travel in long sections as a byte length word and the padded bytes
//! ([`crate::row::bytes_to_words`]). A transaction id is 64 bits in two words (`tx_low`,
//! `tx_high`); a block reference is its packed word ([`signals::BlockRef::to_word`]).
//!
//! ```text
//! key operation, two replicas (NDB's linear commit):
//!   client --TC_KEYREQ..--> coordinator --LQH_KEYREQ--> primary --LQH_KEYREQ--> backup
//!   client --TC_EXECREQ--->      ^                                                 |
//!                                +-------------------LQH_KEYCONF-------------------+
//!   commit:   coordinator --COMMIT_REQ--> backup --COMMIT_REQ--> primary --COMMIT_CONF--> coordinator
//!   complete: the same chain with COMPLETE_REQ / COMPLETE_CONF (locks released)
//!   abort:    coordinator --ABORT_REQ--> primary --ABORT_REQ--> backup (when it was passed on)
//!             --ABORT_CONF--> coordinator (from the last replica that held the operation)
//!
//! scan (NDB's SCAN_TABREQ / SCAN_FRAGREQ), every chosen partition in parallel:
//!   client --SCAN_TABREQ--> coordinator --SCAN_FRAGREQ--> storage (one per partition)
//!   storage --SCAN_FRAGCONF (a batch)--> coordinator --SCAN_TABCONF--> client
//!   client --SCAN_NEXTREQ (fragment)--> coordinator --SCAN_FRAG_NEXTREQ--> storage ... until done
//!   aggregates: each storage sends its partial groups when its partition is done; the
//!   coordinator merges them and sends the result (fragment u32::MAX), then SCAN_DONE.
//!   Flow control: a partition has at most one batch between storage and the client; it runs
//!   on only when the client asks.
//! ```
//! GSNs 200..=299.

use bytemuck::{Pod, Zeroable};
use signals::SignalData;

/// Splits a 64-bit id into its two words.
pub const fn split(id: u64) -> (u32, u32) {
    (id as u32, (id >> 32) as u32)
}

/// Joins two words into a 64-bit id.
pub const fn join(low: u32, high: u32) -> u64 {
    (low as u64) | ((high as u64) << 32)
}

/// An operation's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum OpKind {
    /// Read the row.
    Read = 1,
    /// Insert a new row (DuplicateKey when it exists).
    Insert = 2,
    /// Update named columns of an existing row (NotFound when it does not exist).
    Update = 3,
    /// Insert or replace the row.
    Write = 4,
    /// Delete an existing row (NotFound when it does not exist).
    Delete = 5,
}

impl OpKind {
    /// The kind for a wire number.
    pub fn from_u32(n: u32) -> Option<OpKind> {
        Some(match n {
            1 => OpKind::Read,
            2 => OpKind::Insert,
            3 => OpKind::Update,
            4 => OpKind::Write,
            5 => OpKind::Delete,
            _ => return None,
        })
    }

    /// Whether it changes the row.
    pub fn writes(self) -> bool {
        self != OpKind::Read
    }
}

/// How a read locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum LockMode {
    /// The latest committed value, no lock (writes always lock exclusively).
    CommittedRead = 0,
    /// A shared lock held to the end of the transaction.
    Shared = 1,
    /// An exclusive lock held to the end of the transaction.
    Exclusive = 2,
}

impl LockMode {
    /// The mode for a wire number.
    pub fn from_u32(n: u32) -> Option<LockMode> {
        Some(match n {
            0 => LockMode::CommittedRead,
            1 => LockMode::Shared,
            2 => LockMode::Exclusive,
            _ => return None,
        })
    }
}

/// What an execute asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Exec {
    /// Run the batch; the transaction stays open with its locks.
    NoCommit = 1,
    /// Run the batch and commit.
    Commit = 2,
    /// Undo everything and end the transaction.
    Rollback = 3,
}

impl Exec {
    /// The value for a wire number.
    pub fn from_u32(n: u32) -> Option<Exec> {
        Some(match n {
            1 => Exec::NoCommit,
            2 => Exec::Commit,
            3 => Exec::Rollback,
            _ => return None,
        })
    }
}

/// `TC_EXECCONF.outcome`: the batch ran; the transaction is open.
pub const OUTCOME_EXECUTED: u32 = 1;
/// `TC_EXECCONF.outcome`: committed (on every replica, in memory).
pub const OUTCOME_COMMITTED: u32 = 2;
/// `TC_EXECCONF.outcome`: rolled back as asked.
pub const OUTCOME_ROLLED_BACK: u32 = 3;
/// `TC_OUTCOME_REP.outcome`: aborted on every replica (by the takeover).
pub const OUTCOME_ABORTED: u32 = 4;

/// `TC_EXECREQ.durability`: the commit is acknowledged once every replica holds it in memory
/// (NDB's network durability).
pub const DURABILITY_MEMORY: u32 = 0;
/// `TC_EXECREQ.durability`: the commit is acknowledged once its global checkpoint is on disk
/// on every data node.
pub const DURABILITY_DISK: u32 = 1;

/// The table id of the redo log's control records (never a real table's).
pub const CONTROL_TABLE: u32 = u32::MAX;

/// The GCI a global checkpoint step (`GCP_PREPARE`, `GCP_COMMIT`, `GCP_SAVE_REQ`, `GCP_SAVED`)
/// names, read as the step's declared payload; `None` (a counted drop) for anything else.
pub fn gcp_step_gci(signal: &signals::SignalView<'_>, ctx: &mut node::block::Context<'_>) -> Option<u64> {
    let (low, high) = match signal.gsn() {
        GCP_PREPARE => ctx.typed::<GcpPrepare>(signal).map(|p| (p.gci_low, p.gci_high))?,
        GCP_COMMIT => ctx.typed::<GcpCommit>(signal).map(|p| (p.gci_low, p.gci_high))?,
        GCP_SAVE_REQ => ctx.typed::<GcpSaveReq>(signal).map(|p| (p.gci_low, p.gci_high))?,
        GCP_SAVED => ctx.typed::<GcpSaved>(signal).map(|p| (p.gci_low, p.gci_high))?,
        _ => return None,
    };
    Some(join(low, high))
}

/// The (GCI, node) of a step's answer (`GCP_PREPARE_CONF`, `GCP_NODEFINISH`,
/// `GCP_SAVE_CONF`), read as its declared payload.
pub fn gcp_answer(signal: &signals::SignalView<'_>, ctx: &mut node::block::Context<'_>) -> Option<(u64, u32)> {
    let (low, high, node) = match signal.gsn() {
        GCP_PREPARE_CONF => ctx.typed::<GcpPrepareConf>(signal).map(|p| (p.gci_low, p.gci_high, p.node))?,
        GCP_NODEFINISH => ctx.typed::<GcpNodeFinish>(signal).map(|p| (p.gci_low, p.gci_high, p.node))?,
        GCP_SAVE_CONF => ctx.typed::<GcpSaveConf>(signal).map(|p| (p.gci_low, p.gci_high, p.node))?,
        _ => return None,
    };
    Some((join(low, high), node))
}

/// The payload of answer `gsn` for `gci` from `node`, as its declared struct's words.
pub fn gcp_answer_words(gsn: signals::Gsn, gci: u64, node: u32) -> Vec<u32> {
    let (gci_low, gci_high) = split(gci);
    match gsn {
        GCP_PREPARE_CONF => GcpPrepareConf { gci_low, gci_high, node }.as_words().to_vec(),
        GCP_NODEFINISH => GcpNodeFinish { gci_low, gci_high, node }.as_words().to_vec(),
        _ => GcpSaveConf { gci_low, gci_high, node }.as_words().to_vec(),
    }
}

/// `LQH_KEYREQ.flags`: this replica is the last of the chain (answers the coordinator).
pub const LQH_LAST_REPLICA: u32 = 1;

macro_rules! payloads {
    ($( $(#[$doc:meta])* $name:ident { $( $(#[$fdoc:meta])* $field:ident ),* $(,)? } )*) => {
        $(
            $(#[$doc])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
            pub struct $name { $( $(#[$fdoc])* pub $field: u32, )* }
        )*
    };
}

payloads! {
    /// `TC_KEYREQ` (client -> coordinator): one operation; section 0 the key, section 1 the
    /// attribute list (insert, update, write).
    TcKeyReq {
        tx_low, tx_high,
        /// The operation's number in the transaction, from 0, in sending order.
        op_no,
        table, table_version,
        /// [`OpKind`].
        operation,
        /// [`LockMode`] (reads).
        lock,
        /// The partition map version the client used.
        map_version,
    }
    /// `TC_EXECREQ` (client -> coordinator): ends a batch of `operations` `TC_KEYREQ`s.
    TcExecReq {
        tx_low, tx_high,
        /// [`Exec`].
        exec,
        /// How many operations this batch sent.
        operations,
        /// [`DURABILITY_MEMORY`] or [`DURABILITY_DISK`] (a commit).
        durability,
    }
    /// `TC_KEYCONF` (coordinator -> client): a read's result; section 0 the row image when found.
    TcKeyConf { tx_low, tx_high, op_no, found }
    /// `TC_EXECCONF` (coordinator -> client): the batch is done.
    TcExecConf {
        tx_low, tx_high, outcome,
        /// The global checkpoint a commit went into (0 otherwise).
        gci_low, gci_high,
    }
    /// `TC_EXECREF` (coordinator -> client): the transaction is aborted; section 0 the message.
    TcExecRef {
        tx_low, tx_high,
        /// [`ErrorCode`](crate::ErrorCode).
        error,
        /// The failing operation, or `u32::MAX`.
        op_no,
        /// 1 when the commit may or may not have happened.
        outcome_unknown,
    }
    /// `LQH_KEYREQ` (coordinator -> primary -> backup): one operation on one replica.
    LqhKeyReq {
        tx_low, tx_high, tc_ref, tc_slot, tc_op,
        table, table_version, partition, operation, lock,
        /// [`LQH_LAST_REPLICA`].
        flags,
        /// The storage block of the next replica (0: none).
        next_ref,
        /// Filled by the primary when it passes the request on.
        primary_ref, primary_op,
        /// The API node session the transaction belongs to (a takeover tells it the outcome).
        api_ref,
    }
    /// `LQH_KEYCONF` (last replica -> coordinator): prepared on every replica of the chain;
    /// section 0 the row for a read that found one.
    LqhKeyConf { tx_low, tx_high, tc_slot, tc_op, primary_ref, primary_op, backup_ref, backup_op, found }
    /// `LQH_KEYREF` (a replica -> coordinator): refused; section 0 the message.
    LqhKeyRef { tx_low, tx_high, tc_slot, tc_op, error, primary_ref, primary_op }
    /// `COMMIT_REQ` (coordinator -> last replica -> ... -> primary).
    CommitReq {
        tx_low, tx_high, tc_ref, tc_slot, tc_op, op, next_ref, next_op,
        /// The global checkpoint the transaction commits in (its redo records carry it).
        gci_low, gci_high,
    }
    /// `COMMIT_CONF` (primary -> coordinator).
    CommitConf { tx_low, tx_high, tc_slot, tc_op }
    /// `COMPLETE_REQ`: as `COMMIT_REQ`; releases the locks.
    CompleteReq { tx_low, tx_high, tc_ref, tc_slot, tc_op, op, next_ref, next_op, gci_low, gci_high }
    /// `COMPLETE_CONF`.
    CompleteConf { tx_low, tx_high, tc_slot, tc_op }
    /// `ABORT_REQ` (coordinator -> primary -> backup), found by the coordinator's ids.
    AbortReq { tx_low, tx_high, tc_ref, tc_slot, tc_op }
    /// `ABORT_CONF` (the last replica that held the operation -> coordinator).
    AbortConf { tx_low, tx_high, tc_slot, tc_op }
    /// `GCP_PREPARE` (master checkpoint -> every checkpoint -> its coordinators): global
    /// checkpoint `gci` opens next; hold commits until `GCP_COMMIT`.
    GcpPrepare { gci_low, gci_high }
    /// `GCP_PREPARE_CONF`: commits are held (`node` of the sender).
    GcpPrepareConf { gci_low, gci_high, node }
    /// `GCP_COMMIT`: commits now carry `gci`; the one before it closes.
    GcpCommit { gci_low, gci_high }
    /// `GCP_NODEFINISH`: no commit of `gci` (the closed one) or earlier is still running here.
    GcpNodeFinish { gci_low, gci_high, node }
    /// `GCP_SAVE_REQ` (master -> checkpoint -> storage): make the redo durable through `gci`.
    GcpSaveReq { gci_low, gci_high }
    /// `GCP_SAVE_CONF`: the redo of `gci` and before is on disk.
    GcpSaveConf { gci_low, gci_high, node }
    /// `GCP_SAVED` (master -> every checkpoint -> coordinators and storage): `gci` is durable.
    GcpSaved { gci_low, gci_high }
    /// `GCP_CLOSE_REQ` (coordinator -> checkpoint -> master): a disk-durable commit waits in
    /// `gci`: close it now rather than at the interval.
    GcpCloseReq { gci_low, gci_high }
    /// `GCP_TIMER`: the master's interval.
    GcpTimer { unused }
    /// `RESTART_INFO_REQ` (checkpoint -> its storage instances): what your files hold.
    RestartInfoReq { unused }
    /// `RESTART_INFO` (storage -> checkpoint; checkpoint -> master, for the whole node): the
    /// highest global checkpoint saved on disk (`saved`) and the highest any record carries
    /// (`max`).
    RestartInfo { node, saved_low, saved_high, max_low, max_high }
    /// `RESTART_ORD` (master -> checkpoints -> storage): restore through `restart` (the
    /// highest checkpoint saved on every node); new global checkpoints start above `max`.
    RestartOrd { restart_low, restart_high, max_low, max_high }
    /// `RESTART_DONE` (storage -> checkpoint): restored.
    RestartDone { node, rows_low, rows_high }
    /// `LCP_CONTINUE`: the next step of a local checkpoint.
    LcpContinue { unused }
    /// `MEMBER_HEARTBEAT` (membership -> the right neighbour's membership in the ring of live data
    /// nodes).
    Heartbeat {
        node,
        /// 1 when the sender's map has the receiver serving (0: restarting).
        you_serve,
    }
    /// `MEMBER_HELLO` (membership -> a data node whose link came up): who I am. The president
    /// admits a node the cluster declared dead (a restart: `MEMBER_MAP`, then `MEMBER_ADMIT`)
    /// or, when it cannot, answers `MEMBER_STOP`. `fresh` 1: this process started empty and
    /// was never a running member (a node that was cut off and comes back is not fresh: it
    /// is told to stop, and must restart).
    MemberHello { node, fresh }
    /// `FAIL_REPORT` (membership -> the president): `node` is suspected dead (heartbeats
    /// missed or its link hung up).
    FailReport { node }
    /// `FAIL_PREP` (president -> every survivor): stop talking to the nodes of section 0 (a
    /// list of node ids) and confirm; `round` names this attempt.
    FailPrep { round }
    /// `FAIL_PREP_CONF` (survivor -> president).
    FailPrepConf { round, node }
    /// `FAIL_COMMIT` (president -> every survivor): the nodes of section 0 are dead as of
    /// partition map `version`; section 1 that whole map ([`crate::layout::LiveMap::to_words`]),
    /// so survivors that missed a step agree again.
    FailCommit { round, version }
    /// `MEMBER_STOP` (membership -> a data node): stop now; section 0 the reason, `code` the
    /// exit code to use.
    MemberStop { code }
    /// `NODE_FAILED` (membership -> the blocks of its node): data node `node` is dead as of
    /// partition map `version`; every survivor agreed.
    NodeFailed { node, version }
    /// `MEMBER_TIMER`: the heartbeat interval.
    MemberTimer { unused }
    /// `ARBIT_REQ` (president -> the arbitrator API node): may the survivors of section 0
    /// (node ids) go on? `ticket` is the cluster id, checked by the arbitrator.
    ArbitReq { round, ticket_low, ticket_high }
    /// `ARBIT_CONF` / `ARBIT_REF` (arbitrator -> president): yes, or no (another side won).
    ArbitAnswer { round, granted }
    /// `TAKEOVER_REQ` (the president's coordinator -> every live storage instance): the data
    /// nodes of section 0 (node ids) are dead; report every operation record whose
    /// coordinator is on a dead data node. `generation` names this request.
    TakeoverReq { generation }
    /// `TAKEOVER_OP` (storage -> the taking-over coordinator): one such record. `state` is
    /// [`TAKEOVER_PREPARED`] or [`TAKEOVER_COMMITTED`]; a committed one carries its GCI.
    TakeoverOp { tx_low, tx_high, tc_ref, tc_slot, tc_op, state, gci_low, gci_high, generation, api_ref }
    /// `TC_OUTCOME_REP` (the taking-over coordinator -> the transaction's API node): the
    /// transaction whose coordinator died ended `outcome` ([`OUTCOME_COMMITTED`] in `gci`, or
    /// [`OUTCOME_ABORTED`]) on every replica.
    TcOutcomeRep { tx_low, tx_high, outcome, gci_low, gci_high }
    /// `TAKEOVER_CONF` (storage -> the taking-over coordinator): all `ops` were reported.
    TakeoverConf { generation, ops }
    /// `REPAIR_REQ` (coordinator -> one storage instance): commit, complete or abort the one
    /// operation record that (`tc_ref`, `tc_slot`, `tc_op`) names on this replica only (no
    /// chain), after a node failure broke its chain or took its coordinator.
    RepairReq { tx_low, tx_high, tc_ref, tc_slot, tc_op, action, gci_low, gci_high, tag }
    /// `REPAIR_CONF` (storage -> the sender): done (`found` 0 when the record was gone).
    RepairConf { tx_low, tx_high, tc_slot, tc_op, action, found, tag }
    /// `MEMBER_MAP`: the partition map `version`, section 0 its node lists
    /// ([`crate::layout::LiveMap::to_words`]: dead, restarting, rejoined). From the president to every live membership block
    /// (`event` [`MAP_STARTING`] or [`MAP_STARTED`] for data node `node`, answered with
    /// `MEMBER_MAP_CONF`); from a membership block to its node's blocks; and from a data node
    /// to each API node linked to it (on link-up and on every change; `event` 0).
    MemberMap { version, node, event }
    /// `MEMBER_MAP_CONF` (membership -> president): map `version` is in force here.
    MemberMapConf { version, node }
    /// `MEMBER_ADMIT` (president -> a restarted data node): you are admitted as of map
    /// `version` (section 0 the map's node lists, section 1 the first of `chunks` pieces of
    /// the schema as the schema file holds it, `MEMBER_SCHEMA` the rest): install it and copy
    /// your partitions.
    MemberAdmit { version, chunks }
    /// `MEMBER_SCHEMA` (president -> a restarted data node, after `MEMBER_ADMIT`): piece
    /// `index` of the schema, section 0.
    MemberSchema { version, index }
    /// `MEMBER_COPIED` (storage -> its membership; a restarted node's membership -> the
    /// president): every partition copied, `rows` rows in all.
    MemberCopied { version, rows_low, rows_high }
    /// `COPY_ORD` (membership -> its storage instances on a restarted node): copy every
    /// partition you hold from its primary.
    CopyOrd { version }
    /// `COPY_REQ` (restarted node's storage -> the primary's storage): send me the rows of
    /// partition `partition` of table `table` (`table_version`), and pass every write of it on
    /// to me from now on.
    CopyReq { request, table, table_version, partition }
    /// `COPY_ROWS` (primary's storage -> the restarted node's storage): section 0 up to a
    /// batch of rows (key and committed image, each a byte length word and the bytes);
    /// `last` 1 ends the copy; `cursor` and `slots` say how far through the partition's row
    /// slots it is (for progress and ETA).
    CopyRows { request, rows, last, cursor, slots }
    /// `COPY_ACK` (restarted node -> primary): batch applied, send the next.
    CopyAck { request }
    /// `COPY_REF` (primary -> restarted node): the copy cannot run; section 0 why.
    CopyRef { request, error }
    /// `COPY_CONTINUE`: a copy's next step (after a locked row or the throttle).
    CopyContinue { request }
    /// `CHECKSUM_REQ` (anyone -> storage): the rows of one partition of a table.
    ChecksumReq { request, table, partition }
    /// `CHECKSUM_CONF`: row count and an order-independent checksum of (key, row) pairs.
    ChecksumConf { request, table, partition, held, rows, checksum_low, checksum_high }
    /// `DICT_CREATE_REQ` (client -> dictionary -> master): section 0 the definition as JSON.
    DictCreateReq { request, requester }
    /// `DICT_DROP_REQ` (client -> dictionary -> master): section 0 the table's name.
    DictDropReq { request, requester }
    /// `DICT_ADD_INDEX_REQ` (client -> dictionary -> master): add an ordered index to a table
    /// that may hold rows; section 0 `{"table": name, "index": {"name", "columns"}}` as JSON.
    /// Answered (`DICT_CONF`) once the index is built on every data node.
    DictAddIndexReq { request, requester }
    /// `DICT_LIST_REQ` (client -> dictionary): every table.
    DictListReq { request }
    /// `DICT_LIST_CONF`: section 0 the tables as JSON.
    DictListConf { request, count }
    /// `DICT_CONF` (master -> requester): the change is committed on every data node.
    DictConf { request, table, version }
    /// `DICT_REF` (dictionary -> requester): refused; section 0 the message.
    DictRef { request, error }
    /// `DICT_PREPARE_REQ` (master -> every data node's dictionary); section 0 the table as JSON.
    DictPrepareReq { change, kind, table, version }
    /// `DICT_PREPARE_CONF`.
    DictPrepareConf { change, node }
    /// `DICT_PREPARE_REF`; section 0 the message.
    DictPrepareRef { change, node, error }
    /// `DICT_COMMIT_REQ` (master -> every prepared dictionary): install (1) or abandon (0).
    DictCommitReq { change, install }
    /// `DICT_COMMIT_CONF`.
    DictCommitConf { change, node }
    /// `DROP_TABLE_ORD` (dictionary -> its node's storage instances): free a dropped table.
    DropTableOrd { table, version }
    /// `INDEX_BUILD_REQ` (dictionary -> its node's storage instances): build index number
    /// `index` of the table (installed with it) from the rows each holds, while writes go on.
    IndexBuildReq { change, table, version, index }
    /// `INDEX_BUILD_CONF` (storage -> dictionary): built on every partition this instance holds.
    IndexBuildConf { change, instance }
    /// `INDEX_BUILD_CONTINUE` (storage -> itself): the next step of a build.
    IndexBuildContinue { build }
    /// `TC_TIMER` (coordinator -> itself): check timeouts.
    TcTimer { generation }
    /// `SCAN_TABREQ` (client -> coordinator): open a scan; section 0 the scan
    /// ([`crate::scan::ScanSpec`] bytes).
    ScanTabReq {
        /// The client's id for the scan (unique among its open scans).
        scan_id,
        table, table_version,
        /// Most rows in one batch of one partition.
        batch_rows,
        /// Most bytes of rows in one batch (capped by the section size).
        batch_bytes,
        /// Most rows one partition returns (0: no limit).
        limit,
        /// The partition map version the client used.
        map_version,
        /// [`LockMode`]: committed read (no transaction), or shared / exclusive row locks held
        /// by the transaction `tx_low`, `tx_high` until it ends (its key operations may then
        /// update or delete the rows the scan returned: lock takeover).
        lock,
        tx_low, tx_high,
    }
    /// `SCAN_TABCONF` (coordinator -> client): a batch of rows of one partition (or of the
    /// merged aggregate); section 0 the rows as value tuples.
    ScanTabConf {
        scan_id,
        /// The partition scan's number in this scan (`u32::MAX`: the merged aggregate).
        fragment,
        rows,
        /// [`SCAN_FRAGMENT_DONE`] | [`SCAN_DONE`].
        flags,
        /// Partitions the scan runs on (pruning shows here).
        partitions,
        /// Rows the storage blocks examined for this batch.
        examined,
    }
    /// `SCAN_TABREF` (coordinator -> client): the scan ended with an error; section 0 the message.
    ScanTabRef { scan_id, error }
    /// `SCAN_NEXTREQ` (client -> coordinator): the next batch of a partition scan, or close
    /// the whole scan.
    ScanNextReq { scan_id, fragment, close }
    /// `SCAN_FRAGREQ` (coordinator -> storage): scan one partition; section 0 the scan.
    ScanFragReq {
        scan_slot, fragment, table, table_version, partition, batch_rows, batch_bytes, limit, max_groups,
        /// [`LockMode`], and the transaction that holds the locks.
        lock, tx_low, tx_high,
    }
    /// `SCAN_FRAGCONF` (storage -> coordinator): a batch (or the partial aggregate); section 0
    /// the rows as value tuples or the encoded groups.
    ScanFragConf { scan_slot, fragment, storage_scan, rows, done, examined }
    /// `SCAN_FRAGREF` (storage -> coordinator): the partition scan failed and is closed;
    /// section 0 the message.
    ScanFragRef { scan_slot, fragment, error }
    /// `SCAN_FRAG_NEXTREQ` (coordinator -> storage): the next batch, or close.
    ScanFragNextReq { storage_scan, scan_slot, fragment, close }
    /// `SCAN_CONTINUE` (storage -> itself): run the next step of a scan.
    ScanContinue { storage_scan }
    /// `SCAN_LOCK_RELEASE` (coordinator -> storage): the transaction ended; release the row
    /// locks its scans took (and close its scans still open).
    ScanLockRelease { tx_low, tx_high }
}

/// `TAKEOVER_OP.state`: prepared (not committed on this replica).
pub const TAKEOVER_PREPARED: u32 = 1;
/// `TAKEOVER_OP.state`: committed on this replica.
pub const TAKEOVER_COMMITTED: u32 = 2;
/// `REPAIR_REQ.action`: commit the record (its after-image becomes the row's).
pub const REPAIR_COMMIT: u32 = 1;
/// `REPAIR_REQ.action`: complete it (release its locks).
pub const REPAIR_COMPLETE: u32 = 2;
/// `REPAIR_REQ.action`: abort it.
pub const REPAIR_ABORT: u32 = 3;
/// `MEMBER_STOP.code`: the cluster declared this node dead (it restarted, or was cut off).
pub const STOP_DECLARED_DEAD: u32 = 4;
/// `MEMBER_STOP.code`: the survivors lack a whole node group.
pub const STOP_GROUP_LOST: u32 = 5;
/// `MEMBER_STOP.code`: the arbitrator chose the other side, or could not be reached.
pub const STOP_ARBITRATION: u32 = 6;
/// A restarted data node could not copy its partitions (exit code 7): its reason says why.
pub const STOP_RESTART_FAILED: u32 = 7;

/// `SCAN_TABCONF.flags`: the partition scan has no more rows.
pub const SCAN_FRAGMENT_DONE: u32 = 1;
/// `SCAN_TABCONF.flags`: the whole scan is done (the last signal of the scan).
pub const SCAN_DONE: u32 = 2;

/// `MEMBER_MAP.event`: data node `node` is admitted and copies its partitions.
pub const MAP_STARTING: u32 = 1;
/// `MEMBER_MAP.event`: data node `node` copied its partitions and serves them.
pub const MAP_STARTED: u32 = 2;

/// `DICT_PREPARE_REQ.kind`: create.
pub const CHANGE_CREATE: u32 = 1;
/// `DICT_PREPARE_REQ.kind`: drop.
pub const CHANGE_DROP: u32 = 2;
/// `DICT_PREPARE_REQ.kind`: add an ordered index (the table keeps its id and version).
pub const CHANGE_ADD_INDEX: u32 = 3;

signals::protocol! {
    /// The engine's signals (GSN 200..=299).
    pub protocol ENGINE = "engine" {
        /// An operation of a transaction.
        TC_KEYREQ = 200 => TcKeyReq;
        /// Ends a batch: execute, commit or roll back.
        TC_EXECREQ = 201 => TcExecReq;
        /// A read's row.
        TC_KEYCONF = 202 => TcKeyConf;
        /// A batch is done.
        TC_EXECCONF = 203 => TcExecConf;
        /// The transaction is aborted.
        TC_EXECREF = 204 => TcExecRef;
        /// Copy every partition held (a restarted node).
        COPY_ORD = 205 => CopyOrd;
        /// Copy one partition from its primary.
        COPY_REQ = 206 => CopyReq;
        /// A batch of copied rows.
        COPY_ROWS = 207 => CopyRows;
        /// A copied batch applied.
        COPY_ACK = 208 => CopyAck;
        /// A copy refused.
        COPY_REF = 209 => CopyRef;
        /// The next step of a copy.
        COPY_CONTINUE = 221 => CopyContinue;
        /// One operation on one replica.
        LQH_KEYREQ = 210 => LqhKeyReq;
        /// Prepared on the chain.
        LQH_KEYCONF = 211 => LqhKeyConf;
        /// Refused by a replica.
        LQH_KEYREF = 212 => LqhKeyRef;
        /// Commit along the chain.
        COMMIT_REQ = 213 => CommitReq;
        /// Committed on the chain.
        COMMIT_CONF = 214 => CommitConf;
        /// Complete (release locks) along the chain.
        COMPLETE_REQ = 215 => CompleteReq;
        /// Completed on the chain.
        COMPLETE_CONF = 216 => CompleteConf;
        /// Abort along the chain.
        ABORT_REQ = 217 => AbortReq;
        /// Aborted on the chain.
        ABORT_CONF = 218 => AbortConf;
        /// A partition's checksum.
        CHECKSUM_REQ = 219 => ChecksumReq;
        /// The checksum.
        CHECKSUM_CONF = 220 => ChecksumConf;
        /// Create a table.
        DICT_CREATE_REQ = 230 => DictCreateReq;
        /// Drop a table.
        DICT_DROP_REQ = 231 => DictDropReq;
        /// List the tables.
        DICT_LIST_REQ = 232 => DictListReq;
        /// The tables.
        DICT_LIST_CONF = 233 => DictListConf;
        /// A schema change is done.
        DICT_CONF = 234 => DictConf;
        /// A schema change was refused.
        DICT_REF = 235 => DictRef;
        /// Phase one of a schema change.
        DICT_PREPARE_REQ = 236 => DictPrepareReq;
        /// Prepared.
        DICT_PREPARE_CONF = 237 => DictPrepareConf;
        /// Refused.
        DICT_PREPARE_REF = 238 => DictPrepareRef;
        /// Phase two of a schema change.
        DICT_COMMIT_REQ = 239 => DictCommitReq;
        /// Installed.
        DICT_COMMIT_CONF = 240 => DictCommitConf;
        /// Free a dropped table's rows.
        DROP_TABLE_ORD = 241 => DropTableOrd;
        /// The coordinator's timeout check.
        TC_TIMER = 242 => TcTimer;
        /// A block's retry of sends delayed by back-pressure.
        RESEND = 243;
        /// Open a scan.
        SCAN_TABREQ = 250 => ScanTabReq;
        /// A batch of a scan.
        SCAN_TABCONF = 251 => ScanTabConf;
        /// A scan failed.
        SCAN_TABREF = 252 => ScanTabRef;
        /// The next batch, or close.
        SCAN_NEXTREQ = 253 => ScanNextReq;
        /// Scan one partition.
        SCAN_FRAGREQ = 254 => ScanFragReq;
        /// A partition's batch.
        SCAN_FRAGCONF = 255 => ScanFragConf;
        /// A partition scan failed.
        SCAN_FRAGREF = 256 => ScanFragRef;
        /// A partition's next batch, or close.
        SCAN_FRAG_NEXTREQ = 257 => ScanFragNextReq;
        /// The next step of a partition scan.
        SCAN_CONTINUE = 258 => ScanContinue;
        /// Release a transaction's scan locks.
        SCAN_LOCK_RELEASE = 259 => ScanLockRelease;
        /// Add an ordered index.
        DICT_ADD_INDEX_REQ = 244 => DictAddIndexReq;
        /// Build an index on a storage instance.
        INDEX_BUILD_REQ = 245 => IndexBuildReq;
        /// Built.
        INDEX_BUILD_CONF = 246 => IndexBuildConf;
        /// The next step of a build.
        INDEX_BUILD_CONTINUE = 247 => IndexBuildContinue;
        /// A global checkpoint opens next: hold commits.
        GCP_PREPARE = 260 => GcpPrepare;
        /// Commits held.
        GCP_PREPARE_CONF = 261 => GcpPrepareConf;
        /// Switch to the new global checkpoint.
        GCP_COMMIT = 262 => GcpCommit;
        /// The closed global checkpoint has no commit running on a node.
        GCP_NODEFINISH = 263 => GcpNodeFinish;
        /// Make the redo durable through a global checkpoint.
        GCP_SAVE_REQ = 264 => GcpSaveReq;
        /// Durable on a node (or storage instance).
        GCP_SAVE_CONF = 265 => GcpSaveConf;
        /// A global checkpoint is durable on every data node.
        GCP_SAVED = 266 => GcpSaved;
        /// Close the open global checkpoint early.
        GCP_CLOSE_REQ = 267 => GcpCloseReq;
        /// The master's global checkpoint interval.
        GCP_TIMER = 268 => GcpTimer;
        /// Ask storage what its files hold.
        RESTART_INFO_REQ = 269 => RestartInfoReq;
        /// What a storage instance's or a node's files hold.
        RESTART_INFO = 270 => RestartInfo;
        /// Restore to the restart global checkpoint.
        RESTART_ORD = 271 => RestartOrd;
        /// Restored.
        RESTART_DONE = 272 => RestartDone;
        /// The next step of a local checkpoint.
        LCP_CONTINUE = 273 => LcpContinue;
        /// A ring heartbeat.
        MEMBER_HEARTBEAT = 280 => Heartbeat;
        /// A data node introduces itself on a new link.
        MEMBER_HELLO = 281 => MemberHello;
        /// A data node is suspected dead.
        FAIL_REPORT = 282 => FailReport;
        /// The failure agreement's first phase.
        FAIL_PREP = 283 => FailPrep;
        /// A survivor agrees.
        FAIL_PREP_CONF = 284 => FailPrepConf;
        /// The failure agreement's decision.
        FAIL_COMMIT = 285 => FailCommit;
        /// A data node must stop.
        MEMBER_STOP = 286 => MemberStop;
        /// An agreed node failure, to a node's own blocks.
        NODE_FAILED = 287 => NodeFailed;
        /// The membership block's interval.
        MEMBER_TIMER = 288 => MemberTimer;
        /// Ask the arbitrator.
        ARBIT_REQ = 289 => ArbitReq;
        /// The arbitrator's answer.
        ARBIT_ANSWER = 290 => ArbitAnswer;
        /// Report the operations of a dead coordinator.
        TAKEOVER_REQ = 291 => TakeoverReq;
        /// One operation of a dead coordinator.
        TAKEOVER_OP = 292 => TakeoverOp;
        /// All operations of a dead coordinator reported.
        TAKEOVER_CONF = 293 => TakeoverConf;
        /// Commit, complete or abort one operation record on one replica.
        REPAIR_REQ = 294 => RepairReq;
        /// The repair is done.
        REPAIR_CONF = 295 => RepairConf;
        /// The partition map (a node restart's step, to a node's blocks, to API nodes).
        MEMBER_MAP = 296 => MemberMap;
        /// A map step is in force.
        MEMBER_MAP_CONF = 297 => MemberMapConf;
        /// A restarted node is admitted.
        MEMBER_ADMIT = 298 => MemberAdmit;
        /// A restarted node copied its partitions.
        MEMBER_COPIED = 299 => MemberCopied;
        /// A piece of the schema for a restarted node.
        MEMBER_SCHEMA = 222 => MemberSchema;
        /// A taken-over transaction's outcome, to its API node.
        TC_OUTCOME_REP = 223 => TcOutcomeRep;
    }
}
